//! Frame and text sources without hardware: MJPEG over HTTP from a loopback test server,
//! scanner text over TCP and through a FIFO standing in for a serial device, image files.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use yima_gate::capture::{FileSource, Input, MjpegSource, ScannerSource, Source};
use yima_gate::decode::Decoder;

fn jpeg_of(text: &str) -> Vec<u8> {
    let img = yima_gate::render::render(text, 6).expect("render");
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .expect("jpeg");
    out
}

#[test]
fn mjpeg_over_http_yields_decodable_frames() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let texts = ["YM1:FRAME1", "YM1:FRAME2", "YM1:FRAME3"];
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut req = [0u8; 1024];
        let _ = conn.read(&mut req);
        conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\nConnection: close\r\n\r\n",
        )
        .expect("head");
        for t in texts {
            let jpeg = jpeg_of(t);
            let head = format!(
                "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                jpeg.len()
            );
            conn.write_all(head.as_bytes()).expect("part head");
            conn.write_all(&jpeg).expect("part body");
            conn.write_all(b"\r\n").expect("crlf");
        }
        conn.write_all(b"--frame--\r\n").expect("end");
    });
    let mut src = MjpegSource::connect(&format!("http://{addr}/video")).expect("connect");
    let decoder = Decoder::default();
    let mut got = Vec::new();
    while let Some(input) = src.next().expect("next") {
        let Input::Frame(f) = input else {
            panic!("frames only")
        };
        got.push(decoder.decode(&f.image)[0].text.clone());
    }
    server.join().expect("server");
    assert_eq!(got, texts);
}

#[test]
fn mjpeg_refuses_a_non_multipart_answer() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut req = [0u8; 1024];
        let _ = conn.read(&mut req);
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nhi",
        );
    });
    let err = MjpegSource::connect(&format!("http://{addr}/")).expect_err("must refuse");
    assert!(err.to_string().contains("not a multipart stream"), "{err}");
    server.join().expect("server");
}

#[test]
fn scanner_text_over_tcp() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.write_all(b"YM1:ONE\r\nYM1:TWO\r\n").expect("write");
    });
    let (conn, _) = listener.accept().expect("accept");
    let mut src = ScannerSource::from_reader("tcp", conn);
    let mut got = Vec::new();
    while let Some(Input::Text(t)) = src.next().expect("next") {
        got.push(t);
    }
    client.join().expect("client");
    assert_eq!(got, vec!["YM1:ONE", "YM1:TWO"]);
}

#[test]
fn scanner_text_from_a_device_node() {
    // A FIFO behaves like a serial TTY for a reader: blocking, byte stream, no seeking.
    let dir = tempfile::tempdir().expect("tmp");
    let fifo = dir.path().join("ttyS-test");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(ok.success());
    let path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open fifo");
        f.write_all(b"\x02YM1:SERIAL\x03\r").expect("write");
        f.write_all(b"\n").expect("write");
    });
    let mut src = ScannerSource::device(&fifo).expect("open device");
    assert!(src.name().starts_with("serial:"));
    let first = src.next().expect("next");
    assert!(
        matches!(first, Some(Input::Text(ref t)) if t == "YM1:SERIAL"),
        "{first:?}"
    );
    writer.join().expect("writer");
    assert!(src.next().expect("eof").is_none());
}

#[test]
fn files_and_directories_in_order_skipping_unreadable() {
    let dir = tempfile::tempdir().expect("tmp");
    for (i, t) in ["YM1:A", "YM1:B"].iter().enumerate() {
        yima_gate::render::write_png(t, &dir.path().join(format!("{i}.png"))).expect("png");
    }
    std::fs::write(dir.path().join("2.png"), b"broken").expect("write");
    std::fs::write(dir.path().join("notes.txt"), b"ignored").expect("write");
    let mut src = FileSource::new(&[dir.path().to_path_buf()]).expect("source");
    let decoder = Decoder::default();
    let mut got = Vec::new();
    while let Some(Input::Frame(f)) = src.next().expect("next") {
        got.push(decoder.decode(&f.image)[0].text.clone());
    }
    assert_eq!(got, vec!["YM1:A", "YM1:B"]);
}
