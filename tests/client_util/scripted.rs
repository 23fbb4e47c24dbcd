//! A scripted server for client tests: it accepts connections and runs one script on each, in
//! order, so a test decides every byte the client is sent and checks every byte it sends.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the server does with one accepted connection.
pub type Script = Box<dyn FnOnce(&mut TcpStream) + Send>;

/// A listener and the script run on each accepted connection, in order.
pub fn serve(scripts: Vec<Script>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        for script in scripts {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            script(&mut s);
        }
    });
    (addr, handle)
}

/// Reads one whole packet (fixed header, Remaining Length, body).
pub fn read_packet(s: &mut TcpStream) -> Vec<u8> {
    let mut out = vec![0u8; 1];
    s.read_exact(&mut out).expect("a packet");
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        out.push(b[0]);
        len |= usize::from(b[0] & 0x7f) << shift;
        shift += 7;
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    let start = out.len();
    out.resize(start + len, 0);
    s.read_exact(&mut out[start..]).unwrap();
    out
}
