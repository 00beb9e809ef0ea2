//! Integration tests: the real server on port 0, real HTTP, a real callback receiver that can be
//! told to fail. Scenarios that do not depend on storage run once per backend.

mod helpers;

mod bots;
mod calls;
mod cli;
mod clock;
mod connections;
mod control;
mod crash;
mod delivery;
mod docs;
mod fabric;
mod faults;
mod group;
mod identity;
mod incoming;
mod net_policy;
mod observability;
mod prompts;
mod routes;
mod sip;
mod store_failure;
mod tls;
