//! BGP on the AWS side of VPN tunnels and Direct Connect VIFs (hybrid.md): the session
//! state machine, the VGW's choice among the paths to a site (R-VPN-PRIORITY), the
//! thread that runs a session over TCP, and the customer gateway's configuration that
//! vpcd writes for the site's BGP daemon.

pub mod customer_config;
pub mod selection;
pub mod session;
pub mod speaker;
