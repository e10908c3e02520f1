//! The persistence actor, the only writer to SQLite, and its handle. Writes are cast (callers
//! never wait), kept in cast order, and written in batches: after `flush_interval`, or at once
//! when `max_batch` are pending, one transaction each. Stopping drains the mailbox and writes
//! everything before the actor exits. A failed write is logged and counted; the actor keeps going.
//!
//! Every recorded activity event is also published on a broadcast channel ([`PersistenceHandle::
//! subscribe`]): the one feed of what happens, for live readers such as `GET /v1/events`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, rpc::CallResult};
use sea_orm::DatabaseConnection;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::auth::AuthWrite;
use super::entities::{auth_keys, dashboard_sessions};
use super::records::{
    ActivityFilter, AttemptRecord, MachineStateRecord, PersistenceOptions, ReconcileReport,
    ServiceStateRecord,
};
use super::writes::{Write, WriteHealth, write_batch};
use super::{PersistenceError, auth, queries, reconcile};
use crate::events::ActivityEvent;
use crate::spec::EngineSpec;

/// What the persistence actor accepts. Writes are casts; the rest are calls with a reply port.
pub(crate) enum PersistenceMsg {
    Write(Write),
    /// The flush timer fired.
    Tick,
    /// Write everything pending, reply with how many writes failed since the last barrier.
    Barrier(RpcReplyPort<u64>),
    Reconcile(
        Arc<EngineSpec>,
        RpcReplyPort<Result<ReconcileReport, PersistenceError>>,
    ),
    /// A key or session write the caller waits for; replies with the rows it changed.
    Auth(AuthWrite, RpcReplyPort<Result<u64, PersistenceError>>),
}

/// Cheap to clone; every clone talks to the same actor.
#[derive(Clone)]
pub struct PersistenceHandle {
    actor: ActorRef<PersistenceMsg>,
    db: DatabaseConnection,
    failed_writes: Arc<AtomicU64>,
    health: WriteHealth,
    /// Every recorded event, for live subscribers (none most of the time: then nothing is cloned).
    events: broadcast::Sender<ActivityEvent>,
}

/// Events a slow live subscriber may fall behind by before it misses some (it is told how many).
const EVENT_BACKLOG: usize = 1024;

impl std::fmt::Debug for PersistenceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistenceHandle")
            .field("actor", &self.actor.get_id())
            .field("failed_writes", &self.failed_writes())
            .finish()
    }
}

impl PersistenceHandle {
    /// Starts the actor (unnamed, so several can run in one process). The join handle completes
    /// once the actor has stopped and written everything.
    pub async fn spawn(
        db: DatabaseConnection,
        opts: PersistenceOptions,
    ) -> Result<(PersistenceHandle, tokio::task::JoinHandle<()>), PersistenceError> {
        let failed_writes = Arc::new(AtomicU64::new(0));
        let health = WriteHealth::default();
        let args = PersistenceArgs {
            db: super::writer_connection(&db),
            opts,
            failed_writes: failed_writes.clone(),
            health: health.clone(),
        };
        let (actor, join) = Actor::spawn(None, PersistenceActor, args)
            .await
            .map_err(|source| PersistenceError::Spawn { source })?;
        Ok((
            PersistenceHandle {
                actor,
                db,
                failed_writes,
                health,
                events: broadcast::Sender::new(EVENT_BACKLOG),
            },
            join,
        ))
    }

    /// Records an activity event (cast) and publishes it to live subscribers, its details
    /// [scrubbed](crate::redact::scrub_json) of secrets. Does not log it: the caller logs where
    /// it happens.
    pub fn record(&self, mut event: ActivityEvent) {
        crate::redact::scrub_json(&mut event.detail);
        // Cast before publishing: a subscriber that missed the broadcast (it subscribed just
        // after) finds the event with a read, since its read's barrier queues behind this cast.
        let live = (self.events.receiver_count() > 0).then(|| event.clone());
        self.cast_write(Write::Activity(event));
        if let Some(event) = live {
            let _ = self.events.send(event);
        }
    }

    /// Every event recorded from now on, in recording order. Subscribe *before* reading the
    /// table (e.g. [`PersistenceHandle::activity_after`]) and skip what the read returned: then
    /// nothing falls between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<ActivityEvent> {
        self.events.subscribe()
    }

    /// Records one start attempt (cast).
    pub fn record_attempt(&self, attempt: AttemptRecord) {
        self.cast_write(Write::Attempt(attempt));
    }

    /// Saves a service's runtime columns (cast).
    pub fn save_service_state(&self, state: ServiceStateRecord) {
        self.cast_write(Write::State(state));
    }

    /// Saves what Hestia last observed of a machine (cast), e.g. awake after a wake-up.
    pub fn save_machine_state(&self, state: MachineStateRecord) {
        self.cast_write(Write::Machine(state));
    }

    /// Returns once everything cast before it is written; an error if any write failed since the
    /// previous `flush` (those writes were logged and dropped; later ones still go through).
    pub async fn flush(&self) -> Result<(), PersistenceError> {
        match self.barrier("flush").await? {
            0 => Ok(()),
            failed => Err(PersistenceError::WritesFailed { failed }),
        }
    }

    /// Makes the database match `spec` (see [`ReconcileReport`] for how changes are reported).
    /// Writes cast before it are written first.
    pub async fn reconcile(
        &self,
        spec: impl Into<Arc<EngineSpec>>,
    ) -> Result<ReconcileReport, PersistenceError> {
        let spec: Arc<EngineSpec> = spec.into();
        let reply = self
            .actor
            .call(|port| PersistenceMsg::Reconcile(spec, port), None)
            .await;
        match reply {
            Ok(CallResult::Success(result)) => result,
            _ => Err(PersistenceError::ActorGone {
                operation: "reconcile",
            }),
        }
    }

    /// The recorded timeline, newest first, after writing everything cast before the call.
    pub async fn activity(
        &self,
        filter: ActivityFilter,
    ) -> Result<Vec<ActivityEvent>, PersistenceError> {
        self.barrier("activity read").await?;
        queries::activity(&self.db, &filter).await
    }

    /// Up to `limit` events recorded after the event `after` (by id: UUIDv7 ids sort in recording
    /// order), oldest first, after writing everything cast before the call. Resumes a live feed.
    pub async fn activity_after(
        &self,
        after: Uuid,
        limit: u64,
    ) -> Result<Vec<ActivityEvent>, PersistenceError> {
        self.barrier("activity read").await?;
        queries::activity_after(&self.db, after, limit).await
    }

    /// The last `limit` start attempts of `service` (retries and fallbacks are attempts too),
    /// newest first, after writing everything cast before the call.
    pub async fn start_attempts(
        &self,
        service: &str,
        limit: u64,
    ) -> Result<Vec<AttemptRecord>, PersistenceError> {
        self.barrier("start attempt read").await?;
        queries::start_attempts(&self.db, service, limit).await
    }

    /// Runtime state of every configured (non-removed) service, by id, after writing everything
    /// cast before the call.
    pub async fn service_states(&self) -> Result<Vec<ServiceStateRecord>, PersistenceError> {
        self.barrier("service state read").await?;
        queries::service_states(&self.db).await
    }

    /// Every configured (non-removed) machine row, by id — config columns and what Hestia last
    /// observed (`awake`, `last_seen_at`) — after writing everything cast before the call.
    pub async fn machines(
        &self,
    ) -> Result<Vec<super::entities::machines::Model>, PersistenceError> {
        self.barrier("machine read").await?;
        queries::machines(&self.db).await
    }

    /// Stores a new API key row (its digest, never the key).
    pub async fn create_key(&self, key: auth_keys::Model) -> Result<(), PersistenceError> {
        self.auth_write(AuthWrite::CreateKey(key), "key insert")
            .await
            .map(drop)
    }

    /// Revokes every live key called `name`; returns how many were.
    pub async fn revoke_keys(&self, name: &str) -> Result<u64, PersistenceError> {
        let write = AuthWrite::RevokeKeys {
            name: name.to_owned(),
            at: chrono::Utc::now(),
        };
        self.auth_write(write, "key revoke").await
    }

    /// Every API key row, revoked ones too, oldest first (read without the mailbox).
    pub async fn keys(&self) -> Result<Vec<auth_keys::Model>, PersistenceError> {
        auth::keys(&self.db).await
    }

    /// Notes that the key with `prefix` was used at `at` (cast).
    pub fn key_used(&self, prefix: &str, at: chrono::DateTime<chrono::Utc>) {
        self.cast_write(Write::KeyUsed {
            prefix: prefix.to_owned(),
            at,
        });
    }

    /// Stores a dashboard login; expired ones are forgotten on the way.
    pub async fn create_session(
        &self,
        session: dashboard_sessions::Model,
    ) -> Result<(), PersistenceError> {
        self.auth_write(AuthWrite::CreateSession(session), "session insert")
            .await
            .map(drop)
    }

    /// Forgets a dashboard login (logout).
    pub async fn delete_session(&self, id: &str) -> Result<(), PersistenceError> {
        let write = AuthWrite::DeleteSession { id: id.to_owned() };
        self.auth_write(write, "session delete").await.map(drop)
    }

    /// The unexpired session whose cookie digest is `id` (read without the mailbox).
    pub async fn session(
        &self,
        id: &str,
    ) -> Result<Option<dashboard_sessions::Model>, PersistenceError> {
        auth::session(&self.db, id).await
    }

    async fn auth_write(
        &self,
        write: AuthWrite,
        operation: &'static str,
    ) -> Result<u64, PersistenceError> {
        match self
            .actor
            .call(|port| PersistenceMsg::Auth(write, port), None)
            .await
        {
            Ok(CallResult::Success(result)) => result,
            _ => Err(PersistenceError::ActorGone { operation }),
        }
    }

    /// Writes everything cast so far, then stops the actor and waits for it to exit.
    pub async fn stop(&self) -> Result<(), PersistenceError> {
        let flushed = self.flush().await;
        self.actor
            .drain_and_wait(None)
            .await
            .map_err(|_| PersistenceError::ActorGone { operation: "stop" })?;
        flushed
    }

    /// The connection, for read-only queries elsewhere. Writes go through the actor.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Writes that failed (logged and dropped) since the actor started.
    pub fn failed_writes(&self) -> u64 {
        self.failed_writes.load(Ordering::Relaxed)
    }

    /// Why the database cannot be written now, if so: its file is gone (deleted while Hestia
    /// runs: whatever is written now is lost), or the latest write to some table failed.
    pub async fn write_problem(&self) -> Option<String> {
        if let Ok(Some(file)) = queries::database_file(&self.db).await
            && !file.exists()
        {
            return Some(format!(
                "the database file {} was deleted while Hestia runs; what is recorded now is lost",
                file.display()
            ));
        }
        self.health.problem()
    }

    fn cast_write(&self, write: Write) {
        if let Err(err) = self.actor.cast(PersistenceMsg::Write(write)) {
            self.failed_writes.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %err, "persistence actor is not running; write dropped");
        }
    }

    /// Waits until everything cast before is written; returns how many writes failed meanwhile.
    async fn barrier(&self, operation: &'static str) -> Result<u64, PersistenceError> {
        match self.actor.call(PersistenceMsg::Barrier, None).await {
            Ok(CallResult::Success(failed)) => Ok(failed),
            _ => Err(PersistenceError::ActorGone { operation }),
        }
    }
}

struct PersistenceActor;

struct PersistenceArgs {
    db: DatabaseConnection,
    opts: PersistenceOptions,
    failed_writes: Arc<AtomicU64>,
    health: WriteHealth,
}

struct PersistenceState {
    db: DatabaseConnection,
    opts: PersistenceOptions,
    /// Cast writes not yet written, in cast order.
    pending: Vec<Write>,
    /// A `Tick` is on its way.
    tick_scheduled: bool,
    failed_since_barrier: u64,
    failed_writes: Arc<AtomicU64>,
    health: WriteHealth,
}

impl PersistenceState {
    async fn write_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let failed = write_batch(&self.db, &batch, &self.health).await;
        if failed > 0 {
            self.failed_since_barrier += failed;
            self.failed_writes.fetch_add(failed, Ordering::Relaxed);
        }
    }
}

impl Actor for PersistenceActor {
    type Msg = PersistenceMsg;
    type State = PersistenceState;
    type Arguments = PersistenceArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: PersistenceArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(PersistenceState {
            db: args.db,
            pending: Vec::with_capacity(args.opts.max_batch.max(1)),
            opts: args.opts,
            tick_scheduled: false,
            failed_since_barrier: 0,
            failed_writes: args.failed_writes,
            health: args.health,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PersistenceMsg::Write(write) => {
                // A service's lifecycle state is what the next Hestia adopts from after a crash:
                // it goes to disk at once (with everything cast before it), not at the next tick.
                let urgent = matches!(write, Write::State(_));
                state.pending.push(write);
                if urgent || state.pending.len() >= state.opts.max_batch {
                    state.write_pending().await;
                } else if !state.tick_scheduled {
                    state.tick_scheduled = true;
                    // If the actor is gone when the timer fires, post_stop has written everything.
                    drop(myself.send_after(state.opts.flush_interval, || PersistenceMsg::Tick));
                }
            }
            PersistenceMsg::Tick => {
                state.tick_scheduled = false;
                state.write_pending().await;
            }
            PersistenceMsg::Barrier(reply) => {
                state.write_pending().await;
                let failed = std::mem::take(&mut state.failed_since_barrier);
                // The caller may have given up waiting; nothing to do then.
                let _ = reply.send(failed);
            }
            PersistenceMsg::Reconcile(spec, reply) => {
                state.write_pending().await;
                let result = reconcile::reconcile(&state.db, &spec).await;
                if let Err(err) = &result {
                    tracing::error!(error = %err, "reconciling the config with the database failed");
                }
                let _ = reply.send(result);
            }
            PersistenceMsg::Auth(write, reply) => {
                state.write_pending().await;
                let _ = reply.send(auth::apply(&state.db, write).await);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.write_pending().await;
        Ok(())
    }
}
