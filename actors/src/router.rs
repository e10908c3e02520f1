//! The router actor: owns the directory of services and answers "which actor serves `id`?".
//!
//! The directory is published as an immutable snapshot, so the request hot path reads it without
//! a round-trip; the actor is where changes to it (a configuration reload) are serialised.
//! An id that is not configured is `unknown-service` — never a silent default.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::error::ServiceError;
use crate::service::ServiceHandle;

/// The services by id, plus their configuration order for listings.
#[derive(Debug, Default)]
pub struct Directory {
    by_id: HashMap<String, ServiceHandle>,
    order: Vec<String>,
}

impl Directory {
    pub fn new(services: Vec<ServiceHandle>) -> Directory {
        let order = services.iter().map(|s| s.id().to_owned()).collect();
        let by_id = services
            .into_iter()
            .map(|s| (s.id().to_owned(), s))
            .collect();
        Directory { by_id, order }
    }

    pub fn get(&self, id: &str) -> Result<&ServiceHandle, ServiceError> {
        self.by_id
            .get(id)
            .ok_or_else(|| ServiceError::UnknownService {
                service: id.to_owned(),
                known: self.order.clone(),
            })
    }

    /// Every service, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &ServiceHandle> {
        self.order.iter().filter_map(|id| self.by_id.get(id))
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

pub(crate) enum RouterMsg {
    Resolve {
        id: String,
        reply: oneshot::Sender<Result<ServiceHandle, ServiceError>>,
    },
}

pub(crate) struct RouterActor;

impl Actor for RouterActor {
    type Msg = RouterMsg;
    type State = Arc<ArcSwap<Directory>>;
    type Arguments = Arc<ArcSwap<Directory>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<RouterMsg>,
        directory: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(directory)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RouterMsg>,
        msg: RouterMsg,
        directory: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Resolve { id, reply } => {
                let _ = reply.send(directory.load().get(&id).cloned());
            }
        }
        Ok(())
    }
}
