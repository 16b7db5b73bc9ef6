//! The records on PostgreSQL (several platform nodes over one database).
