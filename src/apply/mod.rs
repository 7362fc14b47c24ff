pub mod cmd;
pub mod firewall;
pub mod netlink;
pub mod sysctl;
