//! WebSocket framing (RFC 6455 section 5): the header of a frame the
//! gateway sends, and a decoder of the frames a client sends.
//!
//! The decoder is a state machine fed whatever bytes the socket gave, in
//! pieces of any size (one byte at a time included): all its state lives in
//! [`Decoder`], never in a future, so a read that is dropped half way loses
//! nothing. It keeps on the heap only the payload of a message (or control
//! frame) while it arrives, and lets go of it when the message is handed
//! over: an idle connection's decoder holds no allocation.

/// Continuation of a fragmented message.
const CONTINUATION: u8 = 0x0;
/// A text frame.
pub(crate) const TEXT: u8 = 0x1;
/// A binary frame.
const BINARY: u8 = 0x2;
/// A close frame.
pub(crate) const CLOSE: u8 = 0x8;
/// A ping frame.
pub(crate) const PING: u8 = 0x9;
/// A pong frame.
pub(crate) const PONG: u8 = 0xA;

/// Largest payload of a control frame (close, ping, pong).
pub(crate) const MAX_CONTROL: usize = 125;

/// Close code: the peer broke the protocol.
pub(crate) const PROTOCOL_ERROR: u16 = 1002;
/// Close code: a text message (or close reason) that is not UTF-8.
pub(crate) const INVALID_PAYLOAD: u16 = 1007;

/// Largest header a client frame can have: two bytes, eight of extended
/// length, four of mask.
const MAX_CLIENT_HEAD: usize = 14;

/// Most bytes of a text message reserved on its header's word alone.
const RESERVED: usize = 4096;

/// The header of an unmasked frame the gateway sends: 2, 4 or 10 bytes,
/// built on the stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    bytes: [u8; 10],
    len: u8,
}

impl Head {
    /// The header of a final (unfragmented) frame of `opcode` carrying
    /// `len` payload bytes.
    pub(crate) fn new(opcode: u8, len: usize) -> Head {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x80 | (opcode & 0x0F);
        let head_len = if len <= 125 {
            bytes[1] = len as u8;
            2
        } else if let Ok(short) = u16::try_from(len) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Head {
            bytes,
            len: head_len,
        }
    }

    /// The header's bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

/// A whole thing heard from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A text message (all its fragments), valid UTF-8.
    Text(String),
    /// A binary message; its bytes are not kept (the protocol refuses it).
    Binary,
    /// A ping, with its payload for the pong.
    Ping(Box<[u8]>),
    /// A pong.
    Pong,
    /// A close frame, with its status code if it carried one.
    Close(Option<u16>),
}

/// Why the client's bytes are refused; the connection is failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Violation {
    /// Reserved bits, an unknown opcode, an unmasked frame, a fragmented or
    /// oversized control frame, a continuation out of place, a bad close
    /// code: close 1002.
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8: close 1007.
    #[error("WebSocket text is not UTF-8")]
    NotUtf8,
    /// A message over the size limit: close 1009 (the driver's).
    #[error("WebSocket message over the size limit")]
    TooLarge,
}

impl Violation {
    /// The close code RFC 6455 gives this failure, when the wire (not the
    /// driver) says it.
    pub(crate) fn close_code(self) -> Option<u16> {
        match self {
            Violation::Protocol(_) => Some(PROTOCOL_ERROR),
            Violation::NotUtf8 => Some(INVALID_PAYLOAD),
            Violation::TooLarge => None,
        }
    }
}

/// The frame whose payload is arriving.
#[derive(Debug, Clone, Copy)]
struct Frame {
    opcode: u8,
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes still to come.
    left: u64,
    /// Payload bytes already taken (for the mask's phase).
    taken: u64,
}

/// Decodes the frames of one client connection.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// Most bytes a message (all its fragments) may carry.
    limit: usize,
    /// The header being gathered, while no frame is open.
    head: [u8; MAX_CLIENT_HEAD],
    have: u8,
    frame: Option<Frame>,
    /// The data message in progress: its first opcode, once a non-final
    /// fragment opened it.
    open: Option<u8>,
    /// Its payload so far (text only: binary is counted, not kept).
    message: Vec<u8>,
    /// Bytes of the message in progress, binary included.
    size: usize,
    /// A control frame's payload while it arrives.
    control: Vec<u8>,
}

impl Decoder {
    /// A decoder refusing messages over `limit` bytes.
    pub(crate) fn new(limit: usize) -> Decoder {
        Decoder {
            limit,
            head: [0; MAX_CLIENT_HEAD],
            have: 0,
            frame: None,
            open: None,
            message: Vec::new(),
            size: 0,
            control: Vec::new(),
        }
    }

    /// Takes bytes from the front of `input` until an event is whole or
    /// `input` is used up; `input` is left pointing at what was not taken.
    pub(crate) fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Event>, Violation> {
        loop {
            match self.frame {
                None => {
                    if !self.gather_head(input)? {
                        return Ok(None);
                    }
                }
                Some(mut frame) => {
                    self.take_payload(&mut frame, input);
                    self.frame = Some(frame);
                    if frame.left > 0 {
                        return Ok(None);
                    }
                    self.frame = None;
                    if let Some(event) = self.end_frame(frame)? {
                        return Ok(Some(event));
                    }
                }
            }
            // A frame with no payload is whole as soon as its header is.
            if input.is_empty() && self.frame.is_none_or(|f| f.left > 0) {
                return Ok(None);
            }
        }
    }

    /// Gathers header bytes; true once a header is whole and its frame open.
    fn gather_head(&mut self, input: &mut &[u8]) -> Result<bool, Violation> {
        loop {
            let have = usize::from(self.have);
            let need = head_len(self.head.get(..have).unwrap_or_default());
            if have == need {
                let header = self.head;
                self.have = 0;
                self.open_frame(header.get(..need).unwrap_or_default())?;
                return Ok(true);
            }
            let Some((&byte, rest)) = input.split_first() else {
                return Ok(false);
            };
            *input = rest;
            if let Some(slot) = self.head.get_mut(have) {
                *slot = byte;
            }
            self.have = self.have.saturating_add(1);
            if self.have == 2 {
                // The first two bytes say most of what is wrong early.
                check_start(self.head[0], self.head[1])?;
            }
        }
    }

    /// Checks a whole header against the protocol and the limit, and opens
    /// its frame.
    fn open_frame(&mut self, head: &[u8]) -> Result<(), Violation> {
        let (b0, b1) = (head[0], head[1]);
        let opcode = b0 & 0x0F;
        let fin = b0 & 0x80 != 0;
        let len = match b1 & 0x7F {
            126 => u64::from(u16::from_be_bytes([head[2], head[3]])),
            127 => {
                let mut eight = [0u8; 8];
                eight.copy_from_slice(&head[2..10]);
                let len = u64::from_be_bytes(eight);
                if len >> 63 != 0 {
                    return Err(Violation::Protocol("64-bit length with its top bit set"));
                }
                len
            }
            short => u64::from(short),
        };
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&head[head.len() - 4..]);
        if is_control(opcode) {
            if len > MAX_CONTROL as u64 {
                return Err(Violation::Protocol("control frame over 125 bytes"));
            }
            self.control = Vec::with_capacity(len as usize);
        } else {
            match (opcode, self.open) {
                (CONTINUATION, None) => {
                    return Err(Violation::Protocol("continuation without a message"));
                }
                (TEXT | BINARY, Some(_)) => {
                    return Err(Violation::Protocol("new message inside a fragmented one"));
                }
                _ => {}
            }
            let size = (self.size as u64).saturating_add(len);
            if size > self.limit as u64 {
                return Err(Violation::TooLarge);
            }
            let kind = self.open.unwrap_or(opcode);
            if kind == TEXT {
                // Room for what is announced, but no more than a read
                // brings at once: the rest grows as bytes really arrive,
                // so a header claiming a large frame, its payload never
                // sent, costs no more than its bytes (on many sockets,
                // the claim alone would otherwise reserve gigabytes).
                let now = usize::try_from(len).unwrap_or(usize::MAX).min(RESERVED);
                self.message.reserve(now);
            }
            if opcode != CONTINUATION {
                self.open = Some(opcode);
            }
        }
        self.frame = Some(Frame {
            opcode,
            fin,
            mask,
            left: len,
            taken: 0,
        });
        Ok(())
    }

    /// Takes what `input` holds of the frame's payload, unmasked.
    fn take_payload(&mut self, frame: &mut Frame, input: &mut &[u8]) {
        let n = usize::try_from(frame.left)
            .unwrap_or(usize::MAX)
            .min(input.len());
        let (chunk, rest) = input.split_at(n);
        *input = rest;
        let keep = if is_control(frame.opcode) {
            Some(&mut self.control)
        } else if self.open == Some(TEXT) {
            Some(&mut self.message)
        } else {
            None // binary: counted, not kept
        };
        if let Some(into) = keep {
            let phase = (frame.taken % 4) as usize;
            into.extend(
                chunk
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ frame.mask[(phase + i) % 4]),
            );
        }
        if !is_control(frame.opcode) {
            self.size = self.size.saturating_add(n);
        }
        frame.left -= n as u64;
        frame.taken += n as u64;
    }

    /// A frame's payload is whole: the event it completes, if any.
    fn end_frame(&mut self, frame: Frame) -> Result<Option<Event>, Violation> {
        match frame.opcode {
            PING => Ok(Some(Event::Ping(
                std::mem::take(&mut self.control).into_boxed_slice(),
            ))),
            PONG => {
                self.control = Vec::new();
                Ok(Some(Event::Pong))
            }
            CLOSE => close_event(std::mem::take(&mut self.control)).map(Some),
            _ if !frame.fin => Ok(None),
            _ => {
                let kind = self.open.take();
                self.size = 0;
                let payload = std::mem::take(&mut self.message);
                if kind == Some(TEXT) {
                    let text = String::from_utf8(payload).map_err(|_| Violation::NotUtf8)?;
                    Ok(Some(Event::Text(text)))
                } else {
                    Ok(Some(Event::Binary))
                }
            }
        }
    }
}

/// The length of the header starting with `start`: 2 until its second byte
/// is known, then the whole header's.
fn head_len(start: &[u8]) -> usize {
    match start.get(1) {
        None => 2,
        Some(b1) => {
            let extended = match b1 & 0x7F {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
            2 + extended + mask
        }
    }
}

/// Refuses, from the first two bytes, reserved bits, unknown opcodes,
/// unmasked frames and fragmented or oversized control frames.
fn check_start(b0: u8, b1: u8) -> Result<(), Violation> {
    if b0 & 0x70 != 0 {
        return Err(Violation::Protocol("reserved bits set"));
    }
    let opcode = b0 & 0x0F;
    if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
        return Err(Violation::Protocol("unknown opcode"));
    }
    if b1 & 0x80 == 0 {
        return Err(Violation::Protocol("unmasked client frame"));
    }
    if is_control(opcode) {
        if b0 & 0x80 == 0 {
            return Err(Violation::Protocol("fragmented control frame"));
        }
        if usize::from(b1 & 0x7F) > MAX_CONTROL {
            return Err(Violation::Protocol("control frame over 125 bytes"));
        }
    }
    Ok(())
}

/// Whether `opcode` is a control frame's.
fn is_control(opcode: u8) -> bool {
    opcode & 0x08 != 0
}

/// A close frame's payload: nothing, or a valid code and a UTF-8 reason.
fn close_event(payload: Vec<u8>) -> Result<Event, Violation> {
    match payload.as_slice() {
        [] => Ok(Event::Close(None)),
        [_] => Err(Violation::Protocol("close payload of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !valid_close_code(code) {
                return Err(Violation::Protocol("invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(Violation::NotUtf8);
            }
            Ok(Event::Close(Some(code)))
        }
    }
}

/// Close codes a peer may send (RFC 6455 section 7.4): the defined ones
/// that may appear on the wire, and the registered and private ranges.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A client frame: `b0` (FIN, RSV, opcode), masked with `mask`.
    fn client_frame(b0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![b0];
        let len = payload.len();
        if len <= 125 {
            out.push(0x80 | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            out.push(0x80 | 126);
            out.extend_from_slice(&short.to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// Every event in `bytes`, fed in pieces of `step` bytes; stops at the
    /// first violation.
    fn decode_all(limit: usize, bytes: &[u8], step: usize) -> Result<Vec<Event>, Violation> {
        let mut decoder = Decoder::new(limit);
        let mut events = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            let mut input = piece;
            while let Some(event) = decoder.decode(&mut input)? {
                events.push(event);
            }
            assert!(input.is_empty(), "a piece not taken whole");
        }
        Ok(events)
    }

    #[test]
    fn a_header_claiming_a_large_frame_reserves_no_more_than_a_read() {
        let mut decoder = Decoder::new(1 << 20);
        // A text frame of 1,000,000 bytes announced, 10 sent.
        let mut bytes = vec![0x81, 0x80 | 127];
        bytes.extend_from_slice(&1_000_000u64.to_be_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        bytes.extend_from_slice(&[0u8; 10]);
        let mut input = &bytes[..];
        assert_eq!(decoder.decode(&mut input), Ok(None));
        assert_eq!(decoder.message.len(), 10);
        assert!(
            decoder.message.capacity() <= RESERVED,
            "{}",
            decoder.message.capacity()
        );
    }

    #[test]
    fn headers_have_the_shortest_length_encoding() {
        let cases: [(usize, &[u8]); 5] = [
            (0, &[0x81, 0]),
            (125, &[0x81, 125]),
            (126, &[0x81, 126, 0, 126]),
            (65535, &[0x81, 126, 0xff, 0xff]),
            (65536, &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ];
        for (len, expected) in cases {
            assert_eq!(Head::new(TEXT, len).as_slice(), expected, "{len}");
        }
        assert_eq!(Head::new(CLOSE, 2).as_slice(), &[0x88, 2]);
    }

    #[test]
    fn a_frame_arriving_one_byte_at_a_time_is_decoded() {
        let sizes = [0usize, 1, 125, 126, 300, 65535, 65536];
        for size in sizes {
            let text: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            let frame = client_frame(0x81, text.as_bytes(), [0x37, 0xfa, 0x21, 0x3d]);
            let whole = decode_all(1 << 20, &frame, frame.len()).expect("decodes");
            assert_eq!(whole, vec![Event::Text(text.clone())], "{size} whole");
            // Split at every byte boundary (one byte at a time), and in
            // pieces that straddle the header and the mask's phase.
            for step in [1, 3, 7] {
                let events = decode_all(1 << 20, &frame, step).expect("decodes");
                assert_eq!(events, vec![Event::Text(text.clone())], "{size} by {step}");
            }
        }
    }

    #[test]
    fn frames_split_at_each_boundary_decode_the_same() {
        let frame = client_frame(0x81, "héllo wörld".as_bytes(), [1, 2, 3, 4]);
        for cut in 0..=frame.len() {
            let mut decoder = Decoder::new(1024);
            let (a, b) = frame.split_at(cut);
            let mut events = Vec::new();
            for piece in [a, b] {
                let mut input = piece;
                while let Some(e) = decoder.decode(&mut input).expect("decodes") {
                    events.push(e);
                }
            }
            assert_eq!(events, vec![Event::Text("héllo wörld".into())], "cut {cut}");
        }
    }

    #[test]
    fn several_frames_in_one_read_come_out_one_by_one() {
        let mut bytes = client_frame(0x81, b"one", [9, 8, 7, 6]);
        bytes.extend(client_frame(0x89, b"hi", [1, 1, 1, 1]));
        bytes.extend(client_frame(0x8A, b"", [1, 1, 1, 1]));
        bytes.extend(client_frame(0x82, b"\x00\x01", [5, 5, 5, 5]));
        bytes.extend(client_frame(
            0x88,
            &[0x03, 0xe8, b'b', b'y', b'e'],
            [2, 2, 2, 2],
        ));
        let mut decoder = Decoder::new(1024);
        let mut input = bytes.as_slice();
        let mut events = Vec::new();
        while let Some(e) = decoder.decode(&mut input).expect("decodes") {
            events.push(e);
        }
        assert!(input.is_empty());
        assert_eq!(
            events,
            vec![
                Event::Text("one".into()),
                Event::Ping(Box::from(&b"hi"[..])),
                Event::Pong,
                Event::Binary,
                Event::Close(Some(1000)),
            ]
        );
    }

    #[test]
    fn fragmented_messages_are_joined_with_control_frames_between() {
        let mut bytes = client_frame(0x01, b"hel", [1, 2, 3, 4]);
        bytes.extend(client_frame(0x89, b"p", [4, 3, 2, 1]));
        bytes.extend(client_frame(0x00, b"lo ", [5, 6, 7, 8]));
        bytes.extend(client_frame(0x80, b"there", [8, 7, 6, 5]));
        for step in [1, 2, bytes.len()] {
            let events = decode_all(1024, &bytes, step).expect("decodes");
            assert_eq!(
                events,
                vec![
                    Event::Ping(Box::from(&b"p"[..])),
                    Event::Text("hello there".into())
                ],
                "by {step}"
            );
        }
        // A UTF-8 character split across fragments is whole in the message.
        let e_acute = "é".as_bytes();
        let mut split = client_frame(0x01, &e_acute[..1], [1, 2, 3, 4]);
        split.extend(client_frame(0x80, &e_acute[1..], [1, 2, 3, 4]));
        assert_eq!(
            decode_all(1024, &split, 1),
            Ok(vec![Event::Text("é".into())])
        );
    }

    #[test]
    fn protocol_violations_are_refused() {
        let mask = [1, 2, 3, 4];
        let protocol = |bytes: &[u8]| {
            assert!(
                matches!(decode_all(1024, bytes, 1), Err(Violation::Protocol(_))),
                "{bytes:?}"
            );
        };
        // Unmasked.
        protocol(&[0x81, 0x02, b'h', b'i']);
        // Reserved bits, each.
        for rsv in [0x40, 0x20, 0x10] {
            protocol(&client_frame(0x81 | rsv, b"x", mask));
        }
        // Reserved opcodes.
        for opcode in [0x3, 0x7, 0xB, 0xF] {
            protocol(&client_frame(0x80 | opcode, b"x", mask));
        }
        // A fragmented control frame.
        protocol(&client_frame(0x09, b"x", mask));
        // Control frames over 125 bytes.
        protocol(&client_frame(0x89, &[0u8; 126], mask));
        protocol(&client_frame(0x88, &[0x03, 0xe8].repeat(100), mask));
        // A continuation with no message open; a new message inside one.
        protocol(&client_frame(0x80, b"x", mask));
        let mut inside = client_frame(0x01, b"x", mask);
        inside.extend(client_frame(0x81, b"y", mask));
        protocol(&inside);
        // Close: one byte, and codes that may not be sent.
        protocol(&client_frame(0x88, &[0x03], mask));
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
            protocol(&client_frame(0x88, &code.to_be_bytes(), mask));
        }
        // A 64-bit length with its top bit set.
        protocol(&[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(
            Violation::Protocol("x").close_code(),
            Some(PROTOCOL_ERROR),
            "closed with 1002"
        );
    }

    #[test]
    fn text_that_is_not_utf8_is_refused() {
        let mask = [1, 2, 3, 4];
        let bad = client_frame(0x81, &[0xff, 0xfe, 0xc3], mask);
        assert_eq!(decode_all(1024, &bad, 1), Err(Violation::NotUtf8));
        let mut reason = vec![0x03, 0xe8];
        reason.extend_from_slice(&[0xc3, 0x28]);
        let close = client_frame(0x88, &reason, mask);
        assert_eq!(decode_all(1024, &close, 1), Err(Violation::NotUtf8));
        // Binary is not text: its bytes are not checked.
        let binary = client_frame(0x82, &[0xff, 0xfe], mask);
        assert_eq!(decode_all(1024, &binary, 1), Ok(vec![Event::Binary]));
        assert_eq!(Violation::NotUtf8.close_code(), Some(INVALID_PAYLOAD));
    }

    #[test]
    fn messages_over_the_limit_are_refused_at_their_header() {
        let mask = [1, 2, 3, 4];
        // At the limit: accepted. Over: refused before any payload byte.
        let at = client_frame(0x81, &[b'a'; 100], mask);
        assert_eq!(
            decode_all(100, &at, 1),
            Ok(vec![Event::Text("a".repeat(100))])
        );
        let over = client_frame(0x81, &[b'a'; 101], mask);
        let mut decoder = Decoder::new(100);
        let mut head = &over[..8];
        assert_eq!(decoder.decode(&mut head), Err(Violation::TooLarge));
        // A huge announced length, without its payload.
        let huge = [
            0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
        ];
        assert_eq!(decode_all(1 << 20, &huge, 1), Err(Violation::TooLarge));
        // Fragments each under the limit, together over it.
        let mut fragments = client_frame(0x01, &[b'a'; 60], mask);
        fragments.extend(client_frame(0x80, &[b'a'; 60], mask));
        assert_eq!(decode_all(100, &fragments, 7), Err(Violation::TooLarge));
        assert_eq!(Violation::TooLarge.close_code(), None, "the driver's 1009");
    }

    #[test]
    fn an_idle_decoder_holds_no_allocation() {
        let mut decoder = Decoder::new(1 << 20);
        let mut frame = client_frame(0x01, &[b'a'; 1000], [1, 2, 3, 4]);
        frame.extend(client_frame(0x80, &[b'b'; 1000], [1, 2, 3, 4]));
        frame.extend(client_frame(0x89, b"ping", [1, 2, 3, 4]));
        let mut input = frame.as_slice();
        while decoder.decode(&mut input).expect("decodes").is_some() {}
        assert_eq!(decoder.message.capacity(), 0);
        assert_eq!(decoder.control.capacity(), 0);
    }

    proptest! {
        #[test]
        fn text_round_trips_in_any_fragmentation(
            text in "\\PC{0,300}",
            cuts in proptest::collection::vec(0usize..300, 0..4),
            step in 1usize..40,
            mask in any::<[u8; 4]>(),
        ) {
            // Fragment `text` at byte offsets `cuts` (sorted, deduplicated).
            let bytes = text.as_bytes();
            let mut at: Vec<usize> = cuts.into_iter().filter(|&c| c < bytes.len()).collect();
            at.sort_unstable();
            at.dedup();
            let mut bounds = vec![0];
            bounds.extend(at.into_iter().filter(|&c| c > 0));
            bounds.push(bytes.len());
            let mut wire = Vec::new();
            let pieces = bounds.len() - 1;
            for i in 0..pieces {
                let opcode = if i == 0 { TEXT } else { CONTINUATION };
                let fin = if i + 1 == pieces { 0x80 } else { 0 };
                wire.extend(client_frame(fin | opcode, &bytes[bounds[i]..bounds[i + 1]], mask));
            }
            let events = decode_all(1 << 16, &wire, step).expect("decodes");
            prop_assert_eq!(events, vec![Event::Text(text)]);
        }
    }
}
