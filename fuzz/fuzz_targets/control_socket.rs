//! The control socket's protocol on arbitrary bytes (issue 22): what a client of the
//! root-only socket may send. The framing reader (`control_socket::read_request`) must
//! take a whole request or refuse it with a reason, never read past what the header
//! announces, never act on a truncated one; and what a request carries reaches the
//! parsers a running router uses on it: `trace --live`'s probe (traced over the default
//! lab), `fault start`'s checks, `routes`, and a lab to `apply` (checked as `check` does).

#![no_main]

use std::io::{BufReader, Read};

use control::control_socket::{read_request, RequestError, MAX_HEADER, VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = BufReader::new(data);
    match read_request(&mut reader) {
        Ok(req) => {
            // The header announced exactly the body that was read.
            let header_len = data
                .iter()
                .position(|b| *b == b'\n')
                .expect("a header line")
                + 1;
            let header = std::str::from_utf8(&data[..header_len - 1]).expect("a text header");
            assert!(header.starts_with(VERSION));
            let announced: usize = header.split(' ').nth(1).unwrap().parse().unwrap();
            assert_eq!(req.body.len(), announced);
            // Nothing past the request was consumed.
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            assert_eq!(rest.len(), data.len() - header_len - announced);
            dispatch(&req.command, &req.body);
        }
        Err(RequestError::HeaderTooLong) => assert!(data.len() >= MAX_HEADER),
        Err(RequestError::Truncated { got, want }) => assert!(got < want),
        Err(_) => {}
    }
});

/// What a router does with the request's words before it touches any state.
fn dispatch(command: &str, body: &str) {
    let snap = vpcd_fuzz::default_lab();
    let mut words = command.splitn(2, ' ');
    let verb = words.next().unwrap_or("");
    let args = words.next().unwrap_or("");
    match verb {
        "trace" => {
            if let Ok((probe, json)) = control::trace::Probe::from_request(args) {
                if let Ok(t) = control::trace::trace(snap, &probe) {
                    let _ = if json {
                        control::trace::to_json(&t)
                    } else {
                        control::trace::to_text(&t)
                    };
                }
            }
        }
        "fault" => {
            let w: Vec<&str> = args.split_whitespace().collect();
            if let ["start", action, target, rest @ ..] = w.as_slice() {
                let opt = |i: usize| rest.get(i).copied().filter(|x| *x != "-");
                let _ = control::faults::check_start(snap, action, target, opt(0), opt(1));
            }
        }
        "routes" => {
            let only = Some(args.trim()).filter(|t| !t.is_empty());
            let _ = control::routes::render(snap, only);
        }
        "apply" => {
            let _ = control::check_text(body);
        }
        _ => {}
    }
}
