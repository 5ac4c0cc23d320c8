//! The route table: app routes by name, kept in memory between changes.
//!
//! The platform counts committed changes that can alter a route ([`Directory::route_generation`],
//! bumped *after* each commit). A route read from the directory is kept only if the generation
//! read *before* the read is still current once the read is done, and a kept route serves only
//! while that generation lasts. So a read that raced a change is never kept, and the first
//! request after a change's API call returns reads the route afresh.
//!
//! Unknown names are kept too (a 404 costs no store read); the table is emptied when it
//! reaches [`MAX_ENTRIES`], so no stream of made-up host names can grow it without bound.

use crate::{AppRoute, Directory};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Most names kept at once.
pub(crate) const MAX_ENTRIES: usize = 65_536;

#[derive(Default)]
pub(crate) struct RouteTable {
    inner: RwLock<Kept>,
}

#[derive(Default)]
struct Kept {
    generation: u64,
    routes: HashMap<String, Option<Arc<AppRoute>>>,
}

impl RouteTable {
    /// The route of app `name`, from memory when nothing changed since it was read.
    pub(crate) async fn get(
        &self,
        dir: &dyn Directory,
        name: &str,
    ) -> Result<Option<Arc<AppRoute>>, String> {
        let Some(generation) = dir.route_generation() else {
            return Ok(dir.app(name).await?.map(Arc::new));
        };
        {
            let kept = self.inner.read().unwrap_or_else(|e| e.into_inner());
            if kept.generation == generation {
                if let Some(r) = kept.routes.get(name) {
                    return Ok(r.clone());
                }
            }
        }
        let route = dir.app(name).await?.map(Arc::new);
        let mut kept = self.inner.write().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock so two readers of different generations cannot interleave;
        // a change committed after this check bumps the generation and retires the entry.
        if dir.route_generation() == Some(generation) {
            if kept.generation != generation || kept.routes.len() >= MAX_ENTRIES {
                kept.routes.clear();
                kept.generation = generation;
            }
            kept.routes.insert(name.to_owned(), route.clone());
        }
        Ok(route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rigbox_types::api::{AppStatus, AppVisibility};
    use rigbox_types::WorkspaceId;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tokio::net::TcpStream;

    /// A directory whose store "commits" a change in the middle of a read when asked to.
    #[derive(Default)]
    struct Dir {
        generation: AtomicU64,
        port: Mutex<u16>,
        reads: AtomicUsize,
        /// When set, the next read returns the old port and commits this one meanwhile.
        race_to: Mutex<Option<u16>>,
    }

    impl Dir {
        fn change(&self, port: u16) {
            *self.port.lock().expect("lock") = port;
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[async_trait::async_trait]
    impl Directory for Dir {
        fn route_generation(&self) -> Option<u64> {
            Some(self.generation.load(Ordering::SeqCst))
        }
        async fn app(&self, name: &str) -> Result<Option<AppRoute>, String> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if name != "a" {
                return Ok(None);
            }
            let port = *self.port.lock().expect("lock");
            if let Some(new) = self.race_to.lock().expect("lock").take() {
                self.change(new);
            }
            Ok(Some(AppRoute {
                app_id: "app-1".into(),
                name: name.into(),
                workspace_id: WorkspaceId::parse("ws-abcdefgh").expect("id"),
                workspace_running: true,
                workspace_generation: 1,
                status: AppStatus::Active,
                port,
                h2c: false,
                visibility: AppVisibility::Public,
                allowed_emails: Vec::new(),
                owner_id: "usr-1".into(),
            }))
        }
        async fn key_user(&self, _: &str) -> Result<Option<crate::EdgeUser>, String> {
            Ok(None)
        }
        async fn connect(&self, _: &WorkspaceId, _: u16) -> std::io::Result<TcpStream> {
            Err(std::io::ErrorKind::ConnectionRefused.into())
        }
        async fn session_user(&self, _: &str, _: &str) -> Result<Option<crate::EdgeUser>, String> {
            Ok(None)
        }
        async fn redeem(&self, _: &str, _: &str) -> Result<Option<crate::NewSession>, String> {
            Ok(None)
        }
        async fn end_session(&self, _: &str) -> Result<(), String> {
            Ok(())
        }
    }

    async fn port_of(t: &RouteTable, d: &Dir) -> Option<u16> {
        t.get(d, "a").await.expect("read").map(|r| r.port)
    }

    #[tokio::test]
    async fn routes_are_kept_until_the_generation_changes() {
        let (t, d) = (RouteTable::default(), Dir::default());
        d.change(80);
        assert_eq!(port_of(&t, &d).await, Some(80));
        assert_eq!(port_of(&t, &d).await, Some(80));
        assert_eq!(
            d.reads.load(Ordering::SeqCst),
            1,
            "the second request is served from memory"
        );
        d.change(81);
        assert_eq!(port_of(&t, &d).await, Some(81), "a change is seen at once");
        assert_eq!(d.reads.load(Ordering::SeqCst), 2);
        // Unknown names are kept as unknown, and forgotten at the next change as well.
        assert!(t.get(&d, "b").await.expect("read").is_none());
        assert!(t.get(&d, "b").await.expect("read").is_none());
        assert_eq!(d.reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_read_that_raced_a_change_is_not_kept() {
        let (t, d) = (RouteTable::default(), Dir::default());
        d.change(80);
        *d.race_to.lock().expect("lock") = Some(81);
        // This read saw the old row while the change committed: it answers it, but does not
        // keep it.
        assert_eq!(port_of(&t, &d).await, Some(80));
        assert_eq!(port_of(&t, &d).await, Some(81));
        assert_eq!(port_of(&t, &d).await, Some(81));
        assert_eq!(d.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_table_is_bounded() {
        let (t, d) = (RouteTable::default(), Dir::default());
        for i in 0..MAX_ENTRIES + 10 {
            let _ = t.get(&d, &format!("n{i}")).await;
        }
        let kept = t.inner.read().expect("lock").routes.len();
        assert!(kept <= MAX_ENTRIES && kept > 0, "{kept}");
    }
}
