//! Leader election on etcd and fenced writes.
//!
//! A candidate grants itself a lease of `ttl` seconds and creates the leader key under it
//! in a txn that succeeds only while the key does not exist (`create_revision == 0`). The
//! winner's term is identified by the key's create revision: a later winner's key has
//! another one, even with the same value. Every write of the leader is a txn that compares
//! the leader key's create revision with its own, so a leader that was paused past its
//! lease (SIGSTOP, a long GC, a partition) and wakes up cannot write anything: the txn
//! fails and it steps down. The lease is renewed at a third of its TTL; when the renewal
//! says the lease is gone, the leadership is over.

use std::time::Duration;

use super::store::{Compare, Op, Store, StoreError};

/// A won election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub id: String,
    pub lease: i64,
    /// The leader key's create revision: the fence.
    pub revision: i64,
}

/// Why a fenced write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("fenced: the leader key is no longer ours (term {revision}); write refused")]
    Fenced { revision: i64 },
    #[error("etcd")]
    Store(#[from] StoreError),
}

pub struct Elector {
    pub store: Store,
    pub key: String,
    pub id: String,
    pub ttl: u64,
}

impl Elector {
    /// One attempt: the term when we won, `None` when someone else leads.
    pub async fn try_campaign(&self) -> Result<Option<Term>, StoreError> {
        let lease = self.store.grant(self.ttl).await?;
        let won = self
            .store
            .txn(
                &[Compare::CreateRevision(self.key.clone(), 0)],
                &[Op::Put {
                    key: self.key.clone(),
                    value: self.id.clone().into_bytes(),
                    lease,
                }],
            )
            .await;
        match won {
            Ok(r) if r.succeeded => {
                // The txn's revision is the key's create revision (one write per revision).
                Ok(Some(Term {
                    id: self.id.clone(),
                    lease,
                    revision: r.revision,
                }))
            }
            Ok(_) => {
                let _ = self.store.revoke(lease).await;
                Ok(None)
            }
            Err(e) => {
                let _ = self.store.revoke(lease).await;
                Err(e)
            }
        }
    }

    /// Campaigns until won, trying every `poll` (an expired leader's key is gone within its
    /// TTL; the next attempt after that wins).
    pub async fn campaign(&self, poll: Duration) -> Term {
        loop {
            match self.try_campaign().await {
                Ok(Some(t)) => return t,
                Ok(None) => {}
                Err(e) => tracing::warn!("fleet: campaign: {}", crate::util::error_chain(&e)),
            }
            tokio::time::sleep(poll).await;
        }
    }
}

impl Term {
    /// Renews the lease: false when it is gone (the leadership is over).
    pub async fn keepalive(&self, store: &Store) -> Result<bool, StoreError> {
        Ok(store.keepalive(self.lease).await? > 0)
    }

    /// Runs `ops` only while the leader key is still this term's.
    pub async fn write(&self, store: &Store, key: &str, ops: &[Op]) -> Result<i64, FenceError> {
        let r = store
            .txn(
                &[Compare::CreateRevision(key.to_owned(), self.revision)],
                ops,
            )
            .await?;
        if r.succeeded {
            Ok(r.revision)
        } else {
            Err(FenceError::Fenced {
                revision: self.revision,
            })
        }
    }

    /// Gives the leadership up at once (the standby need not wait for the TTL).
    pub async fn resign(&self, store: &Store) {
        let _ = store.revoke(self.lease).await;
    }
}
