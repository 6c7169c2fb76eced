//! The end-to-end tests, in one binary.

mod pid1;
mod pid1_workload;
