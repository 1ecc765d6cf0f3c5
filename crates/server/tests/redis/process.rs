//! A gateway in a process of its own (the built `chouquette` binary), for
//! tests that must kill one with a signal the way a host crash looks to
//! the others: its config written to a temporary file, ready once
//! `/readyz` answers 200; killed (`kill_on_drop`) and its file removed
//! when dropped.

use std::path::PathBuf;
use std::time::Duration;

use chouquette_testkit::{WsClient, free_port};
use tokio::process::{Child, Command};

use crate::eventually;

pub struct GatewayProcess {
    /// The process, for signals (`start_kill`, `id`, `wait`).
    pub child: Child,
    /// Its public port.
    pub public: u16,
    path: PathBuf,
}

impl GatewayProcess {
    /// Starts the gateway `name` with `config` (anything but `[listen]`,
    /// which gets free loopback ports) and waits until it is ready.
    pub async fn start(name: &str, config: &str) -> GatewayProcess {
        let (public, internal) = (free_port(), free_port());
        let toml = format!(
            "[listen]\npublic = \"127.0.0.1:{public}\"\ninternal = \"127.0.0.1:{internal}\"\n{config}"
        );
        let path = std::env::temp_dir().join(format!("chq-{name}-{internal}.toml"));
        std::fs::write(&path, toml).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_chouquette"))
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let http = chouquette::http_client::HttpClient::default();
        let ready = format!("http://127.0.0.1:{internal}/readyz");
        assert!(
            eventually(Duration::from_secs(20), async || {
                matches!(http.get(&ready, None).await, Ok((200, _)))
            })
            .await,
            "{name} ready"
        );
        GatewayProcess {
            child,
            public,
            path,
        }
    }

    /// `ws://` URL of its public listener.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.public)
    }

    /// A WebSocket client connected to it.
    pub async fn client(&self) -> WsClient {
        WsClient::connect(&self.ws_url()).await
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
