//! A bug-report bundle's reproducer: a case as a plain sh script of xfs_io and standard tools.

pub mod script;
