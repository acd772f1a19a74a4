//! A PKIOperation body, as `/scep` reads it: the SignedData and its signed attributes
//! (`UnverifiedMessage::parse`), then the signature check; also the GET form's `message=`
//! parameter decoding.
#![no_main]
use agentca_scep::{ScepOptions, UnverifiedMessage, decode_message_param};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = UnverifiedMessage::parse(data) {
        let _ = message.reply_to();
        let _ = message.verify(&ScepOptions::LEGACY);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = decode_message_param(text);
    }
});
