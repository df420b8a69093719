//! The command action: run a configured program with the event as JSON on stdin.
//!
//! The program is started directly from its argv (no shell), in a process group of its own,
//! with `AVMON_IDEMPOTENCY_KEY`, `AVMON_ALERT_ID` and `AVMON_STATE` in its environment. It
//! gets the event's payload (one JSON object and a newline) on stdin. It has the notifier's
//! `timeout_s`; on expiry its whole process group is killed. Its exit status and the first
//! `max_output_bytes` of stdout and stderr are recorded in the outbox's attempt log and logged.
//! Exit 0 is delivered; a non-zero exit, a signal, a timeout or a failure to start counts as a
//! failed attempt, retried per `max_attempts` (default 3) with backoff.

use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::channel::{Batch, Sent};

/// `kind = "command"`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandConfig {
    /// The program and its arguments, e.g. `["/usr/local/bin/switch-to-backup", "--encoder", "2"]`.
    pub command: Vec<String>,
    /// How much of stdout and of stderr is kept, bytes.
    pub max_output_bytes: usize,
}

impl Default for CommandConfig {
    fn default() -> Self {
        CommandConfig {
            command: Vec::new(),
            max_output_bytes: 65_536,
        }
    }
}

impl CommandConfig {
    pub fn prepare(&mut self, path: &str, errors: &mut Vec<String>) {
        match self.command.first() {
            None => errors.push(format!(
                "{path}.command: is required: the program and its arguments, e.g. [\"/usr/local/bin/act\", \"--now\"]"
            )),
            Some(p) if p.is_empty() => errors.push(format!("{path}.command[0]: must not be empty")),
            Some(_) => {}
        }
        if self.max_output_bytes > 16 << 20 {
            errors.push(format!("{path}.max_output_bytes: must be at most 16 MiB"));
        }
    }
}

pub(crate) struct Command {
    cfg: CommandConfig,
    timeout: Duration,
}

/// Read all of `r`, keeping the first `max` bytes; returns them and whether more came.
async fn bounded<R: AsyncRead + Unpin>(mut r: R, max: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut more = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, more),
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                more |= n > room;
            }
        }
    }
}

/// Kill `pid`'s whole process group (the program and whatever it started).
#[cfg(unix)]
fn kill_group(pid: u32) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[cfg(not(unix))]
fn kill_group(_pid: u32) {}

impl Command {
    pub fn new(cfg: CommandConfig, timeout: Duration) -> Self {
        Command { cfg, timeout }
    }

    pub fn target(&self) -> String {
        // The program, not its arguments (which may hold credentials).
        format!(
            "command {}",
            self.cfg.command.first().map_or("", String::as_str)
        )
    }

    pub async fn send(&self, batch: &Batch<'_>) -> Sent {
        let Some(row) = batch.rows.first() else {
            return Sent::Delivered {
                detail: json!({}),
                group_key: None,
            };
        };
        let Some((program, args)) = self.cfg.command.split_first() else {
            return Sent::Rejected {
                detail: json!({"error": "no command configured"}),
            };
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env("AVMON_IDEMPOTENCY_KEY", &row.entry.key)
            .env("AVMON_ALERT_ID", &row.entry.alert_id)
            .env("AVMON_STATE", &row.entry.state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Sent::Retry {
                    detail: json!({"error": format!("cannot start {program:?}: {e}")}),
                    after: None,
                }
            }
        };
        let pid = child.id();
        let max = self.cfg.max_output_bytes;
        let out = tokio::spawn(bounded(child.stdout.take().expect("piped"), max));
        let err = tokio::spawn(bounded(child.stderr.take().expect("piped"), max));
        let mut input = row.entry.payload.to_string().into_bytes();
        input.push(b'\n');
        let stdin = child.stdin.take();
        let run = async {
            if let Some(mut stdin) = stdin {
                // A program that does not read its input is its own business.
                let _ = stdin.write_all(&input).await;
                drop(stdin);
            }
            child.wait().await
        };
        let (status, timed_out) = match tokio::time::timeout(self.timeout, run).await {
            Ok(s) => (s.ok(), false),
            Err(_) => {
                if let Some(pid) = pid {
                    kill_group(pid);
                }
                let _ = child.kill().await;
                (child.wait().await.ok(), true)
            }
        };
        // The pipes close once every process of the group is gone; do not wait for strays.
        let grace = Duration::from_secs(1);
        let collect = |h: tokio::task::JoinHandle<(Vec<u8>, bool)>| async move {
            match tokio::time::timeout(grace, h).await {
                Ok(Ok((bytes, more))) => (String::from_utf8_lossy(&bytes).into_owned(), more),
                _ => (String::new(), false),
            }
        };
        let ((stdout, out_more), (stderr, err_more)) = tokio::join!(collect(out), collect(err));
        let code = status.and_then(|s| s.code());
        #[cfg(unix)]
        let signal = status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));
        #[cfg(not(unix))]
        let signal: Option<i32> = None;
        let detail = json!({
            "exit_code": code,
            "signal": signal,
            "timed_out": timed_out,
            "stdout": stdout,
            "stderr": stderr,
            "truncated": out_more || err_more,
        });
        let ok = code == Some(0) && !timed_out;
        let tail = |s: &str| -> String {
            let s = s.trim_end();
            let start = s.char_indices().rev().nth(299).map_or(0, |(i, _)| i);
            s[start..].to_string()
        };
        if ok {
            tracing::info!(
                program = %program, key = %row.entry.key, exit_code = 0,
                stdout = %tail(&stdout), stderr = %tail(&stderr), "command action ran"
            );
            Sent::Delivered {
                detail,
                group_key: None,
            }
        } else {
            tracing::warn!(
                program = %program, key = %row.entry.key, exit_code = ?code, ?signal, timed_out,
                stdout = %tail(&stdout), stderr = %tail(&stderr), "command action failed"
            );
            Sent::Retry {
                detail,
                after: None,
            }
        }
    }
}
