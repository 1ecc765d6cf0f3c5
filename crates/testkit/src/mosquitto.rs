//! A Mosquitto broker of the test's own, on a free loopback port, with its
//! own config: no anonymous clients, a password file made with
//! `mosquitto_passwd -b`, and an ACL where each device may write only under
//! `devices/<its user name>/` (`pattern write devices/%u/#`) while the
//! gateway's user may read everything under `devices/`. The test may kill
//! it and start it again on the same port (nothing persisted: sessions and
//! subscriptions are forgotten, as after a crash without persistence).
//! Missing binaries fail the test, with the package to install.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{free_port, process};

/// The broker binary (Debian package `mosquitto`).
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// The password tool (Debian package `mosquitto`).
pub const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";
/// The gateway's user: reads `devices/#`.
pub const MQTT_GATEWAY_USER: &str = "gateway";
/// Every user's password in these tests.
pub const MQTT_PASSWORD: &str = "pw";

/// A running broker, killed and its folder deleted when dropped.
#[derive(Debug)]
pub struct MosquittoServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl MosquittoServer {
    /// Starts a broker knowing the gateway user and `devices` (each may
    /// publish only under `devices/<its name>/`), all with [`MQTT_PASSWORD`].
    pub async fn start(devices: &[&str]) -> MosquittoServer {
        assert!(
            std::path::Path::new(MOSQUITTO).exists()
                && std::path::Path::new(MOSQUITTO_PASSWD).exists(),
            "{MOSQUITTO} and {MOSQUITTO_PASSWD} must be installed (Debian package mosquitto)"
        );
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("chq-mqtt-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch folder for mosquitto");
        let passwd = dir.join("passwd");
        std::fs::write(&passwd, "").expect("the password file");
        for user in std::iter::once(MQTT_GATEWAY_USER).chain(devices.iter().copied()) {
            let status = std::process::Command::new(MOSQUITTO_PASSWD)
                .arg("-b")
                .arg(&passwd)
                .args([user, MQTT_PASSWORD])
                .stdout(Stdio::null())
                .status()
                .expect("mosquitto_passwd runs");
            assert!(status.success(), "mosquitto_passwd -b for {user}");
        }
        let acl = dir.join("acl");
        std::fs::write(
            &acl,
            format!(
                "user {MQTT_GATEWAY_USER}\ntopic read devices/#\n\
                 # device commands (docs/devices.md)\ntopic write devices/+/commands\n\n\
                 # every device writes under its own name only\npattern write devices/%u/#\n\
                 # and reads its own commands\npattern read devices/%u/commands\n"
            ),
        )
        .expect("the ACL file");
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n\
             persistence false\nlog_dest none\nmax_queued_messages 1000000\n{}",
            passwd.display(),
            acl.display(),
            // (`max_queued_messages`: Mosquitto's default of 1,000 drops
            // what a slow subscriber has not taken yet, and a test gateway
            // in a debug build falls behind a device's flush.)
            // Under root, Mosquitto would switch to the `mosquitto` user,
            // which cannot read the test's folder.
            if root { "user root\n" } else { "" }
        );
        std::fs::write(dir.join("mosquitto.conf"), config).expect("the config file");
        let mut server = MosquittoServer {
            port,
            dir,
            child: None,
        };
        server.launch().await;
        server
    }

    async fn launch(&mut self) {
        let mut command = Command::new(MOSQUITTO);
        command
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let within = Duration::from_secs(10);
        let child = process::spawn_listening(command, self.port, within, "mosquitto", "").await;
        self.child = Some(child);
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT`, without credentials.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Kills it at once (SIGKILL): what a crash looks like to clients.
    pub async fn kill(&mut self) {
        process::kill(&mut self.child).await;
    }

    /// Kills it and starts it again on the same port, with no sessions.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch().await;
    }
}

impl Drop for MosquittoServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
