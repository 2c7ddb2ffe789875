//! godel-control: the control plane. It owns durable state ([`store`]), the
//! snapshot store ([`snapshot_store`]) and the actions every surface calls
//! ([`control::Control`]): spawn, exec, files, snapshots, restore, fork,
//! reconciliation after a restart, teams and tokens. It speaks no HTTP.

pub mod clock;
pub mod control;
pub mod snapshot_store;
pub mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use control::templates::{BuildTemplate, TEMPLATE_RUNTIME};
pub use control::{
    Caller, Control, Owner, POOL_TEAM, PreserveReport, ReplicaConfig, ReplicasReport, Route,
    RuntimeReport, Settings, SpawnOptions, StoreCheck, event_channel,
};
pub use store::{
    ReplicaRecord, ReplicaRegistration, Store, StoreInfo, TeamRecord, TokenFormat, TokenRecord,
};
