//! The launch port: how the host that launched a VM hands it one message after boot (the
//! validator's enrolled guest takes its network's genesis and configuration this way). The
//! port is reachable by anyone the host lets reach it, so every message is size-limited, must
//! arrive whole within a deadline, and is checked by whoever takes it; senders are served one
//! at a time and each hears `ok` or `refused: <why>`.

use serde::de::DeserializeOwned;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

/// How long one sender may take to deliver its whole message.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The whole message a sender wrote before closing its side, within `within` of the
/// connection and `max` bytes.
fn read_message(
    stream: &mut std::net::TcpStream,
    max: u64,
    within: Duration,
) -> anyhow::Result<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut message = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    // Past the limit the rest is read and dropped, so that the sender hears why.
    let mut too_large = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            anyhow::bail!("the message took longer than {within:?}");
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The read timeout is the deadline's rest.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                anyhow::bail!("the message took longer than {within:?}")
            }
            Err(e) => anyhow::bail!("reading the message: {e}"),
        };
        if n == 0 && too_large {
            anyhow::bail!("the message is larger than {max} bytes");
        }
        if n == 0 {
            return Ok(message);
        }
        if too_large || (message.len() + n) as u64 > max {
            too_large = true;
            message = Vec::new();
            continue;
        }
        message.extend_from_slice(&chunk[..n]);
    }
}

/// Waits on TCP `port` for a message (JSON of `M`, at most `max` bytes, whole within `within`
/// of its connection: [`READ_TIMEOUT`] for a launch) that `take` accepts, answering every
/// sender, and returns what `take` made of the first it accepted. A message that is too
/// large, too slow, not the JSON of `M`, or that `take` refuses is answered with the reason;
/// the next sender is heard.
pub fn receive<M: DeserializeOwned, T>(
    port: u16,
    max: u64,
    within: Duration,
    mut take: impl FnMut(M) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if port == 0 {
        anyhow::bail!("launch port: 0 is no port");
    }
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        .map_err(|e| anyhow::anyhow!("launch port {port}: {e}"))?;
    loop {
        let (mut stream, from) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("bulwark-init: launch port: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let _ = stream.set_write_timeout(Some(within));
        let outcome = read_message(&mut stream, max, within).and_then(|message| {
            serde_json::from_slice::<M>(&message)
                .map_err(|e| anyhow::anyhow!("not the expected JSON: {e}"))
        });
        // The message's bytes are gone before the inputs are checked (the genesis is parsed
        // again there).
        let outcome = outcome.and_then(&mut take);
        match outcome {
            Ok(taken) => {
                let _ = stream.write_all(b"ok\n");
                eprintln!("bulwark-init: launch port: message from {from} taken");
                return Ok(taken);
            }
            Err(e) => {
                let reason = format!("{e:#}").replace('\n', " ");
                let _ = stream.write_all(format!("refused: {reason}\n").as_bytes());
                eprintln!("bulwark-init: launch port: message from {from} refused: {reason}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    fn connect(port: u16) -> TcpStream {
        for _ in 0..200 {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the launch port never listened");
    }

    #[test]
    fn a_sender_that_stalls_is_cut_off_and_the_next_one_is_heard() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let within = Duration::from_millis(500);
        let receiver =
            std::thread::spawn(move || receive(port, 1024, within, |m: serde_json::Value| Ok(m)));
        // A slowloris: one byte, then nothing, its side never closed.
        let mut stalled = connect(port);
        stalled.write_all(b"\"").unwrap();
        // The next sender waits its turn and is heard.
        let mut next = connect(port);
        next.write_all(b"\"late\"").unwrap();
        next.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        next.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "ok\n");
        let mut refused = String::new();
        stalled.read_to_string(&mut refused).unwrap();
        assert_eq!(refused, "refused: the message took longer than 500ms\n");
        let taken = receiver.join().unwrap().unwrap();
        assert_eq!(taken, serde_json::Value::String("late".into()));
    }
}
