//! The CA file of the TLS settings: the hand-written DER reader that finds a certificate's
//! basic constraints (`tls::der_is_ca`), alone and behind the PEM reading that
//! `TlsSettings::load` does with the file's text.
//!
//! Input: byte 0 even: the rest is one certificate's DER; odd: the rest is the CA file's
//! text, loaded with a fixed member certificate and key. The result is an answer or a
//! named error, never a panic; bytes after a certificate's outer SEQUENCE do not change the
//! DER reader's answer, and a CA file that loads has a certificate section.
#![no_main]

use cohort_transport::TlsSettings;
use cohort_transport::tls::der_is_ca;
use libfuzzer_sys::fuzz_target;

/// A member certificate issued by `fixtures/tls/ca.pem`, and its key.
const NODE: &str = include_str!("../fixtures/tls/node.pem");
const NODE_KEY: &str = include_str!("../fixtures/tls/node-key.pem");

fuzz_target!(|data: &[u8]| {
    let Some((selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let answer = der_is_ca(rest);
        if answer.is_some() {
            let mut longer = rest.to_vec();
            longer.extend_from_slice(b"\x00trailing");
            assert_eq!(
                der_is_ca(&longer),
                answer,
                "trailing bytes changed the answer"
            );
        }
        return;
    }
    let text = String::from_utf8_lossy(rest);
    match TlsSettings::from_pem(text.as_ref(), NODE, NODE_KEY).load() {
        Ok(_) => assert!(
            text.contains("CERTIFICATE"),
            "a CA file without a certificate section loaded"
        ),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
