//! The dashboard of `--scenario devices`: one WebSocket subscriber to
//! everything on the devices' channel, on a thread and runtime of its own so
//! that the flushing device on the main thread does not delay its receipt
//! times (the regular devices run in worker processes). It counts every message by `seq` (regular and flushed
//! apart) and keeps each regular message's send time and delay, which are
//! sorted into buckets at the end, once the flush's span is known.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::Scenario;
use crate::client::{self, Outcome};
use crate::histogram::{AtomicHistogram, Histogram};
use crate::pg_load::Tally;
use crate::wire::{AppSpec, unix_nanos};
use crate::workload;

/// Most regular messages whose delay is kept (16 bytes each: 64 MiB), some
/// 17 minutes of 19,000 devices every 5 s; the rest are counted in
/// [`Receipts::unrecorded`] and left out of the delays, not of the tally.
pub const MAX_SAMPLES: usize = 4 << 20;

/// A regular message's send time and delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Send time, Unix ns.
    pub sent_ns: u64,
    /// From send to receipt, µs.
    pub delay_us: u64,
}

/// Receipts so far, read while the dashboard runs (to wait for the rest).
#[derive(Debug, Default)]
pub struct Progress {
    /// Regular messages received.
    pub regular: AtomicU64,
    /// Flushed messages received.
    pub flush: AtomicU64,
}

/// Everything the dashboard received.
#[derive(Debug, Default)]
pub struct Receipts {
    /// Regular messages by `seq`.
    pub regular: Tally,
    /// Flushed messages by `seq`.
    pub flush: Tally,
    /// Regular messages' delays, in receipt order.
    pub samples: Vec<Sample>,
    /// Regular messages beyond [`MAX_SAMPLES`].
    pub unrecorded: u64,
    /// Flushed messages' delays, µs.
    pub flush_delays: Vec<(usize, u64)>,
    /// When the last flushed message arrived, Unix ns.
    pub flush_last_received_ns: Option<u64>,
    /// Frames that were not data the bench understands (errors, resets).
    pub other_frames: u64,
}

/// A running dashboard.
pub struct Dashboard {
    /// Receipts so far.
    pub progress: Arc<Progress>,
    stop: watch::Sender<bool>,
    thread: JoinHandle<anyhow::Result<Receipts>>,
}

impl Dashboard {
    /// Subscribes to everything on `app`'s channel at `public`; returns
    /// once the gateway acknowledged the subscription.
    pub async fn start(public: SocketAddr, app: AppSpec) -> anyhow::Result<Dashboard> {
        let progress = Arc::new(Progress::default());
        let (stop, stopped) = watch::channel(false);
        let (ready, subscribed) = oneshot::channel();
        let shared = progress.clone();
        let thread = std::thread::Builder::new()
            .name("dashboard".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start the dashboard's runtime")?;
                runtime.block_on(watch_channel(public, app, shared, stopped, ready))
            })
            .context("cannot start the dashboard's thread")?;
        match subscribed.await {
            Ok(Ok(())) => Ok(Dashboard {
                progress,
                stop,
                thread,
            }),
            Ok(Err(reason)) => bail!("the dashboard could not subscribe: {reason}"),
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => bail!("the dashboard's thread ended before subscribing"),
            },
        }
    }

    /// Stops reading; everything received.
    pub fn finish(self) -> anyhow::Result<Receipts> {
        let _ = self.stop.send(true);
        self.thread
            .join()
            .map_err(|_| anyhow!("the dashboard's thread panicked"))?
    }
}

async fn watch_channel(
    public: SocketAddr,
    app: AppSpec,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
    ready: oneshot::Sender<Result<(), String>>,
) -> anyhow::Result<Receipts> {
    let exp = unix_nanos() / 1_000_000_000 + 24 * 3600;
    let message = workload::subscribe(&app, Scenario::Devices, 0, exp);
    let source = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
    let mut ws = match client::open(public, source, &message).await {
        Outcome::Subscribed(ws) => {
            let _ = ready.send(Ok(()));
            ws
        }
        Outcome::Refused => {
            let _ = ready.send(Err("refused (503)".into()));
            bail!("the gateway refused the dashboard");
        }
        Outcome::Failed(reason) => {
            let _ = ready.send(Err(reason.clone()));
            bail!("the dashboard failed: {reason}");
        }
    };
    let mut receipts = Receipts::default();
    let flush_delays = AtomicHistogram::default();
    loop {
        let message = tokio::select! {
            m = ws.next() => m,
            _ = stop.changed() => break,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                bail!("the gateway closed the dashboard's connection")
            }
            Some(Ok(_)) => continue,
        };
        let now = unix_nanos();
        let found = readings(text.as_str());
        if found.is_empty() {
            receipts.other_frames += 1;
        }
        for reading in found {
            let delay_us = now.saturating_sub(reading.t_ns) / 1000;
            if reading.buffered {
                receipts.flush.add(reading.seq);
                flush_delays.record(delay_us);
                receipts.flush_last_received_ns = Some(now);
                progress.flush.fetch_add(1, Ordering::Relaxed);
            } else {
                receipts.regular.add(reading.seq);
                if receipts.samples.len() < MAX_SAMPLES {
                    receipts.samples.push(Sample {
                        sent_ns: reading.t_ns,
                        delay_us,
                    });
                } else {
                    receipts.unrecorded += 1;
                }
                progress.regular.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    receipts.flush_delays = flush_delays.snapshot();
    Ok(receipts)
}

/// A delivered frame: one message, or a batch of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Frames {
    One(Frame),
    Many(Vec<Frame>),
}

/// The part of a message the bench reads (`data` read apart, so that one
/// message it cannot read does not hide the others of its batch).
#[derive(Deserialize)]
struct Frame {
    class: Option<String>,
    data: Option<serde_json::Value>,
}

/// A device message's numbers, as the MQTT source publishes its payload.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Reading {
    /// Run-wide number (regular and flushed messages count apart).
    pub seq: u64,
    /// Send time, Unix ns.
    pub t_ns: u64,
    /// Part of the flush.
    #[serde(default)]
    pub buffered: bool,
}

/// The device messages in one text frame; a frame the bench cannot read
/// yields none.
pub fn readings(text: &str) -> Vec<Reading> {
    let frames = match serde_json::from_str::<Frames>(text) {
        Ok(Frames::One(frame)) => vec![frame],
        Ok(Frames::Many(frames)) => frames,
        Err(_) => return Vec::new(),
    };
    frames
        .into_iter()
        .filter(|f| f.class.as_deref() == Some("data"))
        .filter_map(|f| serde_json::from_value(f.data?).ok())
        .collect()
}

/// Where a regular message's delay is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Sent outside the measured window: not counted.
    Outside,
    /// Sent in the window, while no flush was under way.
    Quiet,
    /// Sent in the window during the flush (from its first message sent to
    /// its last received).
    DuringFlush,
}

/// The bucket of a message sent at `sent_ns`, given the window
/// `[start, end)` and the flush's span `[first sent, last received]`.
pub fn bucket(sent_ns: u64, window: (u64, u64), flush: Option<(u64, u64)>) -> Bucket {
    if sent_ns < window.0 || sent_ns >= window.1 {
        return Bucket::Outside;
    }
    match flush {
        Some((first, last)) if sent_ns >= first && sent_ns <= last => Bucket::DuringFlush,
        _ => Bucket::Quiet,
    }
}

/// The delays of the regular messages sent in the window: (quiet, during
/// the flush).
pub fn delays(
    samples: &[Sample],
    window: (u64, u64),
    flush: Option<(u64, u64)>,
) -> (Histogram, Histogram) {
    let (quiet, during) = (AtomicHistogram::default(), AtomicHistogram::default());
    for s in samples {
        match bucket(s.sent_ns, window, flush) {
            Bucket::Outside => {}
            Bucket::Quiet => quiet.record(s.delay_us),
            Bucket::DuringFlush => during.record(s.delay_us),
        }
    }
    let histogram = |a: &AtomicHistogram| {
        let mut h = Histogram::default();
        h.merge(&a.snapshot());
        h
    };
    (histogram(&quiet), histogram(&during))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::payload;

    #[test]
    fn reads_regular_and_flushed_messages_from_single_and_batched_frames() {
        let one = format!(
            r#"{{"class":"data","channel":"devices","offset":3,"data":{}}}"#,
            payload(7, 99, 1, false)
        );
        assert_eq!(
            readings(&one),
            vec![Reading {
                seq: 7,
                t_ns: 99,
                buffered: false
            }]
        );
        let many = format!(
            r#"[{{"class":"data","data":{}}},{{"class":"ack","channels":{{}}}},{{"class":"data","data":{}}}]"#,
            payload(8, 5, 1, true),
            payload(9, 6, 1, false)
        );
        let got = readings(&many);
        assert_eq!(got.len(), 2);
        assert!(got[0].buffered && got[0].seq == 8);
        assert!(!got[1].buffered && got[1].seq == 9);
        assert!(readings(r#"{"class":"error","data":"nope"}"#).is_empty());
        assert!(readings(r#"{"class":"data","data":{"seq":"x"}}"#).is_empty());
        assert!(readings("not json").is_empty());
    }

    #[test]
    fn messages_are_bucketed_by_send_time_against_the_window_and_the_flush() {
        let window = (100, 200);
        let flush = Some((140, 160));
        assert_eq!(bucket(99, window, flush), Bucket::Outside);
        assert_eq!(bucket(200, window, flush), Bucket::Outside);
        assert_eq!(bucket(100, window, flush), Bucket::Quiet);
        assert_eq!(bucket(139, window, flush), Bucket::Quiet);
        assert_eq!(bucket(140, window, flush), Bucket::DuringFlush);
        assert_eq!(bucket(160, window, flush), Bucket::DuringFlush);
        assert_eq!(bucket(161, window, flush), Bucket::Quiet);
        assert_eq!(bucket(150, window, None), Bucket::Quiet);
        let samples: Vec<Sample> = [(50, 1), (120, 2), (150, 3), (155, 4), (190, 5)]
            .iter()
            .map(|&(sent_ns, delay_us)| Sample { sent_ns, delay_us })
            .collect();
        let (quiet, during) = delays(&samples, window, flush);
        assert_eq!((quiet.total(), during.total()), (2, 2));
        assert_eq!(during.quantile(1.0), Some(4.0));
        assert_eq!(quiet.quantile(0.0), Some(2.0));
    }
}
