//! Frame floods on HTTP/2 that the h2 crate lets through. It closes
//! rapid-reset and RST floods itself, but a client that sends
//! WINDOW_UPDATE or PRIORITY frames in a loop costs a worker most of a
//! core and is never closed; nor is one that sends SETTINGS or PINGs in a
//! loop while it reads the ACKs (h2 only stops one that lets the ACKs pile
//! up), nor frames of unknown types (ignored, as the RFC asks). The rule
//! is Envoy's: WINDOW_UPDATEs are allowed in proportion to the DATA frames
//! sent (`max_inbound_window_update_frames_per_data_frame_sent`, 10) and
//! the streams opened, PRIORITY frames in proportion to the streams
//! (`max_inbound_priority_frames_per_stream`, 100). Frames that carry no
//! work (SETTINGS and PING that are not ACKs, unknown types) get a floor,
//! 2 per stream opened, 1 per DATA frame sent (gRPC's BDP pings answer
//! DATA) and 1 per second of the connection's age, so a client that
//! pings every few seconds for hours is never cut.
//!
//! Both directions are read as frame headers only (9 bytes each: 24-bit
//! length, type, flags, stream id); payloads are skipped, so the cost is a
//! few steps per frame. Outbound DATA frames are counted exactly, and the
//! outbound scan also tells whether a GOAWAY may be written without
//! cutting into a frame hyper has half sent.

use std::time::Instant;

/// Frames allowed whatever else happened.
const FLOOR: u64 = 100;
/// WINDOW_UPDATEs allowed per DATA frame sent.
const WINDOW_UPDATES_PER_DATA: u64 = 10;
/// WINDOW_UPDATEs allowed per stream opened (one for the stream, one for
/// the connection).
const WINDOW_UPDATES_PER_STREAM: u64 = 2;
/// PRIORITY frames allowed per stream opened.
const PRIORITIES_PER_STREAM: u64 = 100;
/// Workless frames (SETTINGS, PING, unknown types) allowed per stream
/// opened, per DATA frame sent, and per second of the connection's age.
const IDLE_FRAMES_PER_STREAM: u64 = 2;
const IDLE_FRAMES_PER_DATA: u64 = 1;
const IDLE_FRAMES_PER_SECOND: u64 = 1;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
/// DATA or HEADERS that end their stream.
const END_STREAM: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
/// The last type RFC 9113 defines (CONTINUATION); past it, unknown.
const LAST_KNOWN: u8 = 0x9;
/// The ACK flag of SETTINGS and PING.
const ACK: u8 = 0x1;

/// Finds frame headers in a byte stream read in pieces of any size.
#[derive(Debug, Default)]
struct FrameScan {
    /// Bytes still to skip: the rest of a payload (or of the preface).
    skip: u64,
    head: [u8; 9],
    have: u8,
}

impl FrameScan {
    /// Calls `frame(type, flags, stream id)` for each frame header in
    /// `bytes`.
    #[inline]
    fn feed(&mut self, mut bytes: &[u8], mut frame: impl FnMut(u8, u8, u32)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len() as u64);
                self.skip -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            let have = usize::from(self.have);
            let n = (9 - have).min(bytes.len());
            self.head[have..have + n].copy_from_slice(&bytes[..n]);
            self.have += n as u8;
            bytes = &bytes[n..];
            if self.have == 9 {
                let h = self.head;
                self.have = 0;
                self.skip = u64::from(u32::from_be_bytes([0, h[0], h[1], h[2]]));
                frame(
                    h[3],
                    h[4],
                    u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                );
            }
        }
    }

    /// Between two frames.
    fn at_boundary(&self) -> bool {
        self.skip == 0 && self.have == 0
    }
}

/// One h2 connection's frame counts.
#[derive(Debug)]
pub struct FloodWatch {
    inbound: FrameScan,
    outbound: FrameScan,
    window_updates: u64,
    priorities: u64,
    /// SETTINGS and PINGs that are not ACKs, and frames of unknown types.
    idle_frames: u64,
    /// For the allowance per second of age.
    opened: Instant,
    streams: u64,
    last_stream: u32,
    data_sent: u64,
    /// Streams the client opened that are not over yet: not ended by
    /// Pocket (END_STREAM) nor reset by either side. Counted from the
    /// frames because hyper lets go of a response body before h2 has sent
    /// what it buffered of it (for a slow client's window, possibly long).
    open: Vec<u32>,
}

/// What the client overdid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    WindowUpdate,
    Priority,
    /// SETTINGS, PING or unknown frames.
    Idle,
}

impl std::fmt::Display for Flood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flood::WindowUpdate => "WINDOW_UPDATE flood",
            Flood::Priority => "PRIORITY flood",
            Flood::Idle => "SETTINGS/PING/unknown frame flood",
        })
    }
}

impl FloodWatch {
    /// For a connection whose reads begin with the 24-byte preface.
    pub fn new() -> FloodWatch {
        FloodWatch {
            inbound: FrameScan {
                skip: 24,
                ..FrameScan::default()
            },
            outbound: FrameScan::default(),
            window_updates: 0,
            priorities: 0,
            idle_frames: 0,
            opened: Instant::now(),
            streams: 0,
            last_stream: 0,
            data_sent: 0,
            open: Vec::new(),
        }
    }

    /// Streams open on the connection (see `open`).
    pub fn open_streams(&self) -> usize {
        self.open.len()
    }

    /// Counts the frames in bytes read from the client.
    #[inline]
    pub fn read(&mut self, bytes: &[u8]) -> Result<(), Flood> {
        let FloodWatch {
            inbound,
            window_updates,
            priorities,
            idle_frames,
            streams,
            last_stream,
            open,
            ..
        } = self;
        inbound.feed(bytes, |kind, flags, id| match kind {
            WINDOW_UPDATE => *window_updates += 1,
            PRIORITY => *priorities += 1,
            HEADERS if id > *last_stream => {
                *last_stream = id;
                *streams += 1;
                open.push(id);
            }
            RST_STREAM => open.retain(|&s| s != id),
            SETTINGS | PING if flags & ACK == 0 => *idle_frames += 1,
            k if k > LAST_KNOWN => *idle_frames += 1,
            _ => {}
        });
        let window_budget = FLOOR
            + WINDOW_UPDATES_PER_DATA * self.data_sent
            + WINDOW_UPDATES_PER_STREAM * self.streams;
        if self.window_updates > window_budget {
            return Err(Flood::WindowUpdate);
        }
        if self.priorities > FLOOR + PRIORITIES_PER_STREAM * self.streams {
            return Err(Flood::Priority);
        }
        let idle_budget =
            FLOOR + IDLE_FRAMES_PER_STREAM * self.streams + IDLE_FRAMES_PER_DATA * self.data_sent;
        // The clock only once past the rest of the allowance.
        if self.idle_frames > idle_budget
            && self.idle_frames
                > idle_budget + IDLE_FRAMES_PER_SECOND * self.opened.elapsed().as_secs()
        {
            return Err(Flood::Idle);
        }
        Ok(())
    }

    /// Counts the DATA frames in bytes written to the client.
    #[inline]
    pub fn wrote(&mut self, bytes: &[u8]) {
        let FloodWatch {
            outbound,
            data_sent,
            open,
            ..
        } = self;
        outbound.feed(bytes, |kind, flags, id| {
            if kind == DATA {
                *data_sent += 1;
            }
            let ends = matches!(kind, DATA | HEADERS) && flags & END_STREAM != 0;
            if (ends || kind == RST_STREAM) && id != 0 {
                open.retain(|&s| s != id);
            }
        });
    }

    /// A GOAWAY (ENHANCE_YOUR_CALM) to write, if the bytes written so far
    /// end at a frame boundary.
    pub fn goaway(&self) -> Option<[u8; 17]> {
        if !self.outbound.at_boundary() {
            return None;
        }
        let mut f = [0u8; 17];
        f[2] = 8; // length
        f[3] = 0x7; // GOAWAY, no flags, stream 0
        f[9..13].copy_from_slice(&self.last_stream.to_be_bytes());
        f[13..17].copy_from_slice(&0xbu32.to_be_bytes()); // ENHANCE_YOUR_CALM
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, id: u32, payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 9 + payload];
        f[..3].copy_from_slice(&(payload as u32).to_be_bytes()[1..]);
        f[3] = kind;
        f[5..9].copy_from_slice(&id.to_be_bytes());
        f
    }

    fn preface() -> Vec<u8> {
        let mut v = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        v.extend(frame(0x4, 0, 6));
        v
    }

    #[test]
    fn window_updates_beyond_the_budget_are_a_flood_in_any_pieces() {
        let mut bytes = preface();
        for _ in 0..=FLOOR {
            bytes.extend(frame(WINDOW_UPDATE, 0, 4));
        }
        for step in [1, 5, 9, 13, 100, bytes.len()] {
            let mut w = FloodWatch::new();
            let mut r = Ok(());
            for piece in bytes.chunks(step) {
                r = r.and(w.read(piece));
            }
            assert_eq!(r, Err(Flood::WindowUpdate), "pieces of {step}");
            assert_eq!(w.window_updates, FLOOR + 1);
        }
    }

    #[test]
    fn data_sent_and_streams_raise_the_budget() {
        let mut w = FloodWatch::new();
        w.read(&preface()).unwrap();
        w.read(&frame(HEADERS, 1, 30)).unwrap();
        let mut out = Vec::new();
        for _ in 0..50 {
            out.extend(frame(DATA, 1, 16384));
        }
        // Written in odd pieces: counted all the same.
        for piece in out.chunks(1000) {
            w.wrote(piece);
        }
        assert_eq!(w.data_sent, 50);
        assert!(w.goaway().is_some());
        w.wrote(&frame(DATA, 1, 10)[..5]);
        assert!(w.goaway().is_none(), "not in the middle of a frame");
        let allowed = FLOOR + 10 * 50 + 2;
        for _ in 0..allowed {
            w.read(&frame(WINDOW_UPDATE, 1, 4)).unwrap();
        }
        assert_eq!(
            w.read(&frame(WINDOW_UPDATE, 1, 4)),
            Err(Flood::WindowUpdate)
        );
    }

    #[test]
    fn settings_pings_and_unknown_frames_beyond_the_budget_are_a_flood() {
        for (kind, payload) in [(SETTINGS, 0), (PING, 8), (0x42, 3)] {
            let mut w = FloodWatch::new();
            let mut bytes = preface();
            for _ in 0..FLOOR - 1 {
                bytes.extend(frame(kind, 0, payload));
            }
            for piece in bytes.chunks(7) {
                w.read(piece).unwrap();
            }
            // ACKs are answers, not work asked for: never counted (the
            // flag means nothing on an unknown type).
            for _ in 0..if kind > LAST_KNOWN { 0 } else { 1000 } {
                let mut ack = frame(kind, 0, payload);
                ack[4] = ACK;
                w.read(&ack).unwrap();
            }
            // The preface's SETTINGS counts too: FLOOR so far.
            assert_eq!(w.idle_frames, FLOOR, "{kind:#x}");
            assert_eq!(w.read(&frame(kind, 0, payload)), Err(Flood::Idle));
        }
    }

    #[test]
    fn streams_data_and_age_raise_the_idle_budget() {
        let mut w = FloodWatch::new();
        w.read(&preface()).unwrap();
        for id in 0..10 {
            w.read(&frame(HEADERS, 1 + 2 * id, 30)).unwrap();
        }
        w.wrote(&frame(DATA, 1, 100));
        // 100 + 2 * 10 + 1, of which the preface's SETTINGS took one.
        for _ in 0..FLOOR + 20 {
            w.read(&frame(PING, 0, 8)).unwrap();
        }
        assert_eq!(w.read(&frame(PING, 0, 8)), Err(Flood::Idle));
        // A connection an hour old that pings every few seconds: fine.
        let mut w = FloodWatch::new();
        w.read(&preface()).unwrap();
        w.opened -= std::time::Duration::from_secs(3600);
        for _ in 0..1200 {
            w.read(&frame(PING, 0, 8)).unwrap();
        }
    }

    #[test]
    fn priority_frames_beyond_the_budget_are_a_flood() {
        let mut w = FloodWatch::new();
        w.read(&preface()).unwrap();
        w.read(&frame(HEADERS, 1, 30)).unwrap();
        w.read(&frame(HEADERS, 1, 30)).unwrap(); // the same stream: one
        for _ in 0..FLOOR + PRIORITIES_PER_STREAM {
            w.read(&frame(PRIORITY, 3, 5)).unwrap();
        }
        assert_eq!(w.read(&frame(PRIORITY, 3, 5)), Err(Flood::Priority));
        let g = w.goaway().unwrap();
        assert_eq!(&g[..9], &[0, 0, 8, 7, 0, 0, 0, 0, 0]);
        assert_eq!(&g[9..], &[0, 0, 0, 1, 0, 0, 0, 0xb]);
    }
}
