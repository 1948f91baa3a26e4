pub mod torture;
