//! Chaos on the process side: Hestia killed mid-start, stale pids, service output after Hestia
//! dies, secrets in URLs, readiness of the database, services Hestia does not start, prototype configs.
