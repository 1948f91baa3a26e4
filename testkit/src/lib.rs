//! The one test kit of the workspace (a dev-dependency only, never in a
//! shipped binary):
//!
//! * [`gate`]: skip a test that this machine cannot run, saying why in its
//!   output, or fail it when `CI=true` (CI installs everything);
//! * [`netns`]: named network namespaces deleted on drop (even on panic),
//!   with what runs inside them killed, and a way to run code inside one;
//! * [`proc`]: run a command and fail loudly; daemons that are killed on
//!   drop and print their log when the test panics;
//! * [`wait`]: `eventually`, polling a condition until a deadline.
//!
//! Tests change nothing in the root namespace: everything they create lives
//! in namespaces made here.

pub mod gate;
pub mod netns;
pub mod proc;
pub mod wait;

pub use gate::{Prereqs, in_ci};
pub use netns::Netns;
pub use proc::{Daemon, run};
pub use wait::{eventually, eventually_async};
