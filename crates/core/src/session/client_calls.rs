//! The session's side of backends' calls to its user (docs/rpc.md, "Calls
//! to clients"): the `call` frame comes through the mailbox and its id is
//! kept ([`OpenCalls`]); the client's `result` or `error` naming that id is
//! handed to the calling node. An answer naming no open call (unknown,
//! expired, answered already) is ignored and counted: never an error, so a
//! client answering late is not punished for it.

use bytes::Bytes;
use chouquette_protocol::client::{CallError, CallResult};
use std::time::Instant;

use super::{Session, Verdict};
use crate::user_calls::{self, CallReply, ClientAnswer, ClientCall, Reply};

impl Session {
    /// Writes a backend's `call` and keeps its id answerable.
    pub(super) fn call_sent(&mut self, call: &ClientCall, out: &mut Vec<Bytes>) {
        self.client_calls.sent(call, Instant::now());
        out.push(call.frame.clone());
    }

    /// A client's `result`.
    pub(super) fn call_result(&mut self, result: CallResult) {
        self.call_answered(&result.id, ClientAnswer::Result(result.result));
    }

    /// A client's `error` answering a call: its code must be a short word
    /// (it is passed to the backend), else the client is told `bad_message`.
    pub(super) fn call_error(
        &mut self,
        error: CallError,
        reference: Option<&str>,
        out: &mut Vec<Bytes>,
    ) -> Verdict {
        if !user_calls::valid_code(&error.code) {
            let why = format!(
                "`code` must be 1 to {} letters, digits, `_`, `.` or `-`",
                user_calls::MAX_CODE_BYTES
            );
            return self.bad_message(&why, reference, out);
        }
        let message = user_calls::cut_message(error.message.unwrap_or_default());
        let answer = ClientAnswer::Error {
            code: error.code,
            message,
        };
        self.call_answered(&error.id, answer);
        Verdict::Continue
    }

    fn call_answered(&mut self, id: &serde_json::Value, answer: ClientAnswer) {
        let calls = self.node.hub().calls();
        let Some(id) = id.as_str() else {
            return calls.ignored();
        };
        let Some(reply_to) = self.client_calls.answered(id, Instant::now()) else {
            return calls.ignored();
        };
        let reply = CallReply {
            call: id.into(),
            reply: Reply::Answer(answer),
        };
        user_calls::answer(&self.node, reply_to, reply);
    }
}
