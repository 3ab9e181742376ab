//! Noticing at once when another node closes a Raft connection.
//!
//! A connection waits unpolled between the requests of the task that drives it (see `conn`), so
//! a node that stops would be noticed only at the next request to it, up to a heartbeat later.
//! The leader's read lease counts only nodes that have not failed since they last answered
//! (`rq_store::read_index`), and rqlite's leader refuses linearizable reads as soon as a node it
//! needs is gone: so the sockets of Raft connections are also watched for the other side
//! hanging up. They sit in one epoll set of their own, registered with the runtime, which asks
//! for nothing but hang-ups (`EPOLLRDHUP`; errors and `EPOLLHUP` always come): the answers
//! themselves wake nothing.
//!
//! The set holds a duplicate of each socket's descriptor, which keeps the socket open, so a
//! watch is dropped with its connection.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tokio::io::unix::AsyncFd;

/// Called when the other side of a watched connection hangs up.
pub type OnHangup = Arc<dyn Fn() + Send + Sync>;

struct Watched {
    fd: OwnedFd,
    on_hangup: OnHangup,
}

struct Watcher {
    epoll: Epoll,
    watched: Mutex<HashMap<u64, Watched>>,
    next: AtomicU64,
}

impl Watcher {
    fn forget(&self, token: u64) -> Option<Watched> {
        let gone = self.watched.lock().unwrap().remove(&token)?;
        let _ = self.epoll.delete(&gone.fd);
        Some(gone)
    }
}

/// An epoll set of sockets watched for hang-ups, with the task that reports them.
#[derive(Clone)]
pub struct Hangups {
    watcher: Arc<Watcher>,
}

impl Hangups {
    /// A set and its task, on the current runtime; `None` where epoll cannot be had
    /// (connections then go unwatched, and a hang-up is noticed at the next request).
    pub fn new() -> Option<Hangups> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).ok()?;
        let fd: OwnedFd = epoll.0.try_clone().ok()?;
        // SAFETY: the `AsyncFd` owns `fd`, which stays open, and the same descriptor, until it
        // is dropped.
        #[allow(unsafe_code)]
        let ready = unsafe { AsyncFd::register(fd) }.ok()?;
        let watcher = Arc::new(Watcher {
            epoll,
            watched: Mutex::default(),
            next: AtomicU64::new(0),
        });
        tokio::spawn(run(Arc::downgrade(&watcher), ready));
        Some(Hangups { watcher })
    }

    /// Watches `socket` until the watch is dropped: `on_hangup` runs once if the other side
    /// closes it (or it fails) first. `None` if it cannot be watched.
    pub fn watch(&self, socket: &impl AsFd, on_hangup: OnHangup) -> Option<Watch> {
        let w = &self.watcher;
        let fd = socket.as_fd().try_clone_to_owned().ok()?;
        let token = w.next.fetch_add(1, Ordering::Relaxed);
        w.epoll.add(&fd, EpollEvent::new(EpollFlags::EPOLLRDHUP, token)).ok()?;
        w.watched.lock().unwrap().insert(token, Watched { fd, on_hangup });
        Some(Watch {
            watcher: Arc::downgrade(w),
            token,
        })
    }
}

async fn run(watcher: Weak<Watcher>, ready: AsyncFd<OwnedFd>) {
    let mut events = [EpollEvent::empty(); 16];
    loop {
        let Ok(mut guard) = ready.readable().await else {
            return;
        };
        let Some(w) = watcher.upgrade() else {
            return;
        };
        let n = match w.epoll.wait(&mut events, EpollTimeout::ZERO) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "watching Raft connections for hang-ups stopped");
                return;
            }
        };
        for e in &events[..n] {
            if let Some(gone) = w.forget(e.data()) {
                (gone.on_hangup)();
            }
        }
        if n < events.len() {
            guard.clear_ready();
        }
    }
}

/// A socket being watched; dropping it ends the watch and closes the duplicate descriptor.
pub struct Watch {
    watcher: Weak<Watcher>,
    token: u64,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(w) = self.watcher.upgrade() {
            w.forget(self.token);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn counter() -> (Arc<AtomicUsize>, OnHangup) {
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        (
            n,
            Arc::new(move || {
                m.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn a_hang_up_is_noticed_without_a_read_and_traffic_is_not_one() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let (hangups, on_hangup) = counter();
        let set = Hangups::new().expect("epoll");
        let _watch = set.watch(&client, on_hangup).expect("watched");
        // Traffic both ways is not a hang-up.
        server.write_all(b"answer").await.unwrap();
        let mut buf = [0u8; 6];
        client.read_exact(&mut buf).await.unwrap();
        client.write_all(b"ask").await.unwrap();
        settle().await;
        assert_eq!(hangups.load(Ordering::SeqCst), 0);
        // The other side goes away: noticed once, without anyone reading the socket.
        drop(server);
        settle().await;
        assert_eq!(hangups.load(Ordering::SeqCst), 1);
        settle().await;
        assert_eq!(hangups.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_dropped_watch_lets_the_socket_close_and_reports_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let (hangups, on_hangup) = counter();
        let set = Hangups::new().expect("epoll");
        let watch = set.watch(&client, on_hangup).expect("watched");
        drop(watch);
        drop(client);
        // The duplicate is closed too: the other side sees the end of the stream.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut rest))
            .await
            .expect("closed")
            .unwrap();
        drop(server);
        settle().await;
        assert_eq!(hangups.load(Ordering::SeqCst), 0);
    }
}
