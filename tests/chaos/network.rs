//! Chaos on the network side: upstream connections across restarts, edge timeouts, HTTP/2,
//! client faults, envelope memory and shutdown.
