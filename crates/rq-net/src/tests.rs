use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::testing::Ca;
use crate::{ClientOptions, KeyPair, ServerOptions, client_config, common_name, load_certs, server_config};

/// Runs one handshake in memory and an exchange of a few bytes; the error of either side.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    name: &str,
) -> Result<String, String> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(name.to_string()).unwrap();
    let server_side = tokio::spawn(async move {
        let mut s = TlsAcceptor::from(server).accept(a).await.map_err(|e| e.to_string())?;
        let cn = s.get_ref().1.peer_certificates().and_then(|c| common_name(&c[0]));
        s.write_all(b"hello").await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(cn)
    });
    let client_side = async {
        let mut c = TlsConnector::from(client)
            .connect(name, b)
            .await
            .map_err(|e| e.to_string())?;
        let cn = c.get_ref().1.peer_certificates().and_then(|c| common_name(&c[0]));
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(cn.unwrap_or_default())
    };
    let client_result = tokio::time::timeout(Duration::from_secs(5), client_side).await.unwrap();
    let server_result = server_side.await.unwrap();
    match (client_result, server_result) {
        (Ok(cn), Ok(_)) => Ok(cn),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

struct Setup {
    dir: tempfile::TempDir,
    ca: Ca,
    server: KeyPair,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let server = ca
        .issue("node1", &["127.0.0.1", "localhost"])
        .write(dir.path(), "server");
    Setup { dir, ca, server }
}

fn server_opts(s: &Setup) -> ServerOptions {
    ServerOptions {
        pair: s.server.clone(),
        ca: Some(s.ca.write(s.dir.path(), "ca.pem")),
        verify_client: false,
        verify_common_name: None,
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    }
}

fn client_opts(s: &Setup) -> ClientOptions {
    ClientOptions {
        ca: Some(s.ca.write(s.dir.path(), "ca.pem")),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_server_certificate_from_the_ca_is_accepted_and_one_from_another_is_not() {
    let s = setup();
    let server = server_config(&server_opts(&s)).unwrap();
    let client = client_config(&client_opts(&s)).unwrap();
    assert_eq!(
        handshake(server.clone(), client.clone(), "127.0.0.1").await,
        Ok("node1".into())
    );
    // The certificate names 127.0.0.1 and localhost, not this.
    assert!(handshake(server.clone(), client, "10.1.2.3").await.is_err());
    let other = Ca::new("other CA");
    let other_dir = tempfile::tempdir().unwrap();
    let stranger = client_config(&ClientOptions {
        ca: Some(other.write(other_dir.path(), "ca.pem")),
        ..Default::default()
    })
    .unwrap();
    let e = handshake(server, stranger, "127.0.0.1").await.unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
}

#[tokio::test]
async fn no_verify_accepts_any_certificate_and_a_fixed_server_name_replaces_the_address() {
    let s = setup();
    let shared = s.ca.issue("shared", &["rqlite.internal"]).write(s.dir.path(), "shared");
    let server = server_config(&ServerOptions {
        pair: shared,
        ..server_opts(&s)
    })
    .unwrap();
    let by_address = client_config(&client_opts(&s)).unwrap();
    assert!(handshake(server.clone(), by_address, "127.0.0.1").await.is_err());
    let named = client_config(&ClientOptions {
        server_name: Some("rqlite.internal".into()),
        ..client_opts(&s)
    })
    .unwrap();
    assert_eq!(handshake(server.clone(), named, "127.0.0.1").await, Ok("shared".into()));
    let any = client_config(&ClientOptions {
        no_verify: true,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(handshake(server, any, "127.0.0.1").await, Ok("shared".into()));
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca_with_the_required_name() {
    let s = setup();
    let server = server_config(&ServerOptions {
        verify_client: true,
        verify_common_name: Some("node2".into()),
        ..server_opts(&s)
    })
    .unwrap();
    let anonymous = client_config(&client_opts(&s)).unwrap();
    assert!(handshake(server.clone(), anonymous, "127.0.0.1").await.is_err());
    let with = |pair: KeyPair| {
        client_config(&ClientOptions {
            pair: Some(pair),
            ..client_opts(&s)
        })
        .unwrap()
    };
    let wrong_name = with(s.ca.issue("node3", &["127.0.0.1"]).write(s.dir.path(), "c3"));
    let e = handshake(server.clone(), wrong_name, "127.0.0.1").await.unwrap_err();
    assert!(!e.is_empty());
    let right = with(s.ca.issue("node2", &["127.0.0.1"]).write(s.dir.path(), "c2"));
    assert_eq!(handshake(server.clone(), right, "127.0.0.1").await, Ok("node1".into()));
    let other = Ca::new("other CA").issue("node2", &["127.0.0.1"]);
    let stranger = with(other.write(s.dir.path(), "stranger"));
    assert!(handshake(server, stranger, "127.0.0.1").await.is_err());
}

#[tokio::test]
async fn a_changed_certificate_is_used_from_the_next_handshake_and_a_bad_one_is_not() {
    let s = setup();
    let server = server_config(&server_opts(&s)).unwrap();
    // A new client each time: a resumed session would not show the server's certificate.
    let client = || client_config(&client_opts(&s)).unwrap();
    assert_eq!(
        handshake(server.clone(), client(), "127.0.0.1").await,
        Ok("node1".into())
    );
    // Modification times have a granularity; make sure the new files look changed.
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.ca.issue("node1-renewed", &["127.0.0.1"])
        .write(s.dir.path(), "server");
    assert_eq!(
        handshake(server.clone(), client(), "127.0.0.1").await,
        Ok("node1-renewed".into())
    );
    // A key that does not match the certificate is not taken; the last good pair stays.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let other = s.ca.issue("mismatched", &["127.0.0.1"]);
    std::fs::write(&s.server.cert, other.cert_pem).unwrap();
    assert_eq!(
        handshake(server, client(), "127.0.0.1").await,
        Ok("node1-renewed".into())
    );
}

#[test]
fn unreadable_and_mismatched_files_are_clear_errors() {
    let s = setup();
    let missing = s.dir.path().join("missing.pem");
    let e = load_certs(&missing).unwrap_err().to_string();
    assert!(e.contains("missing.pem"), "{e}");
    let mismatched = KeyPair {
        cert: s.server.cert.clone(),
        key: s.ca.issue("x", &[]).write(s.dir.path(), "x").key,
    };
    let e = server_config(&ServerOptions {
        pair: mismatched,
        ..server_opts(&s)
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("do not go together"), "{e}");
    std::fs::write(s.dir.path().join("empty.pem"), "").unwrap();
    let e = load_certs(&s.dir.path().join("empty.pem")).unwrap_err().to_string();
    assert!(e.contains("no PEM certificate"), "{e}");
}

mod serving {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use crate::{ServeOptions, serve};

    /// Serves a one-route router with tight limits; its address.
    async fn server(max_connections: usize, header_read_timeout: Duration) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let router = axum::Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route("/large", axum::routing::get(|| async { large_body() }));
        let opts = ServeOptions {
            tls: None,
            max_connections,
            header_read_timeout,
            port: "test",
        };
        tokio::spawn(serve(listener, router, opts, std::future::pending()));
        addr
    }

    /// An answer several times the size of a piece handed to hyper at a time.
    fn large_body() -> Vec<u8> {
        (0..crate::sliced::MAX_PIECE * 3 + 7).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_large_answer_arrives_whole_with_its_length() {
        let addr = server(16, Duration::from_secs(30)).await;
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /large HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
        let want = large_body();
        assert!(head.contains(&format!("content-length: {}", want.len())), "{head}");
        assert_eq!(&raw[split + 4..], &want[..]);
    }

    /// Reads until the other side closes; how long that took, or None if it did not within
    /// `limit`.
    async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout_at((start + limit).into(), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
                Ok(Ok(_)) => continue,
                Err(_) => return None,
            }
        }
    }

    #[tokio::test]
    async fn a_client_that_trickles_its_headers_is_cut_off() {
        let addr = server(16, Duration::from_millis(300)).await;
        let mut slow = TcpStream::connect(&addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let closed = closed_within(&mut slow, Duration::from_secs(5)).await;
        assert!(closed.is_some_and(|t| t >= Duration::from_millis(250)), "{closed:?}");
        // A whole request is answered.
        let mut ok = TcpStream::connect(&addr).await.unwrap();
        ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = ok.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_and_a_freed_place_is_taken_again() {
        let addr = server(2, Duration::from_secs(30)).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
            let mut buf = [0u8; 256];
            assert!(s.read(&mut buf).await.unwrap() > 0);
            held.push(s);
        }
        let mut third = TcpStream::connect(&addr).await.unwrap();
        assert!(closed_within(&mut third, Duration::from_secs(2)).await.is_some());
        drop(held.pop());
        // The server notices the close and frees the place.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut fourth = TcpStream::connect(&addr).await.unwrap();
        fourth.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = fourth.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
}
