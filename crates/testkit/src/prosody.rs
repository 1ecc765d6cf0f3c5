//! A Prosody XMPP server of the test's own: its own config folder, free
//! loopback ports, a component listener with one component (and its
//! secret) per name the test gives, no daemonizing, killed when dropped.
//! The test may kill it and start it again on the same ports (nothing the
//! federation needs is kept by the server: components log in again).
//! A missing binary fails the test, with the package to install.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{free_port, process};

/// The server binary (Debian package `prosody`).
pub const PROSODY: &str = "/usr/bin/prosody";

/// A running server, killed and its folder deleted when dropped.
#[derive(Debug)]
pub struct ProsodyServer {
    component_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl ProsodyServer {
    /// Starts a server accepting the components `(domain, secret)`.
    pub async fn start(components: &[(&str, &str)]) -> ProsodyServer {
        assert!(
            std::path::Path::new(PROSODY).exists(),
            "{PROSODY} must be installed (Debian package prosody)"
        );
        let component_port = free_port();
        let c2s_port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "chq-prosody-{}-{component_port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("a scratch folder for prosody");
        std::fs::create_dir_all(dir.join("certs")).expect("a certs folder for prosody");
        let mut config = format!(
            "daemonize = false\nrun_as_root = true\npidfile = \"{dir}/prosody.pid\"\n\
             data_path = \"{dir}/data\"\ncertificates = \"{dir}/certs\"\n\
             log = {{ {{ levels = {{ min = \"warn\" }}, to = \"file\", filename = \"{dir}/prosody.log\" }} }}\n\
             interfaces = {{ \"127.0.0.1\" }}\nc2s_ports = {{ {c2s_port} }}\n\
             component_ports = {{ {component_port} }}\ncomponent_interface = \"127.0.0.1\"\n\
             http_ports = {{}}\nhttps_ports = {{}}\nmodules_enabled = {{}}\n\
             modules_disabled = {{ \"s2s\", \"posix\" }}\nstorage = \"internal\"\n\
             VirtualHost \"localhost\"\n",
            dir = dir.display()
        );
        for (domain, secret) in components {
            config.push_str(&format!(
                "Component \"{domain}\"\n    component_secret = \"{secret}\"\n"
            ));
        }
        std::fs::write(dir.join("prosody.cfg.lua"), config).expect("the config file");
        let mut server = ProsodyServer {
            component_port,
            dir,
            child: None,
        };
        server.launch().await;
        server
    }

    async fn launch(&mut self) {
        let mut command = Command::new(PROSODY);
        command
            .arg("--config")
            .arg(self.dir.join("prosody.cfg.lua"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let log = format!(" (log: {})", self.dir.join("prosody.log").display());
        let within = Duration::from_secs(15);
        let port = self.component_port;
        let child = process::spawn_listening(command, port, within, "prosody", &log).await;
        self.child = Some(child);
    }

    /// `127.0.0.1:PORT` of the component listener.
    pub fn component_address(&self) -> String {
        format!("127.0.0.1:{}", self.component_port)
    }

    /// Kills it at once (SIGKILL): what a crash looks like to components.
    pub async fn kill(&mut self) {
        process::kill(&mut self.child).await;
    }

    /// Kills it and starts it again on the same ports.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch().await;
    }
}

impl Drop for ProsodyServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
