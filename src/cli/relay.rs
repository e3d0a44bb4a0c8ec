//! `pincat relay`: the relay daemon's flags and their translation.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Args;
use pincat::relay::{Relay, RelayOptions};

use super::addr::{all_interfaces, parse_listen};
use super::duration::parse_duration;
use super::listen::on_signal;
use super::output::OutputArgs;

/// The default relay port (the transit relay's).
pub const DEFAULT_RELAY_PORT: u16 = 4001;

/// `pincat relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Address to listen on: PORT, HOST:PORT or [IPv6]:PORT (a port alone is all interfaces; port 0 picks a free one) [default: [::]:4001, or 0.0.0.0:4001 without IPv6].
    #[arg(long, short, value_name = "[HOST:]PORT", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Most connections waiting for their partner at once.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_pending: u32,
    /// Most of those from one source address, an IPv6 source by its /64 (a flood from one address never blocks another's pairing).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_per_source: u32,
    /// Most pairs spliced at once.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_pairs: u32,
    /// Most pair ends from one source address (an IPv6 source counts by its /64; a pair with both ends there counts twice).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_pairs_per_source: u32,
    /// Cut a pair when nothing moved either way this long.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Time a connection has to send its request line.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub line_timeout: Duration,
    /// Time a connection waits for its partner.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub pending_timeout: Duration,
    /// Cut a pair once it carried this many bytes (both ways together).
    #[arg(long, value_name = "BYTES")]
    pub max_bytes: Option<u64>,
    /// Only serve sources in this network, ADDR/PREFIX (repeatable).
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = parse_net)]
    pub allow_from: Vec<(IpAddr, u8)>,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

fn parse_net(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, l) = s.split_once('/').unwrap_or((s, ""));
    let ip: IpAddr = a
        .parse()
        .map_err(|_| format!("{a:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match l {
        "" => max,
        l => l
            .parse::<u8>()
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| format!("the prefix length must be 0 to {max}"))?,
    };
    Ok((ip, len))
}

/// Runs `pincat relay` until SIGINT/SIGTERM.
pub fn run(a: RelayArgs) -> pincat::Result<()> {
    let listen = a
        .listen
        .unwrap_or_else(|| all_interfaces(DEFAULT_RELAY_PORT));
    let mut o = RelayOptions::new(listen);
    o.max_pending = a.max_pending as usize;
    o.max_per_source = a.max_per_source as usize;
    o.max_pairs = a.max_pairs as usize;
    o.max_pairs_per_source = a.max_pairs_per_source as usize;
    o.idle_timeout = a.idle_timeout;
    o.line_timeout = a.line_timeout;
    o.pending_timeout = a.pending_timeout;
    o.max_bytes = a.max_bytes;
    o.allow_from = a.allow_from;
    let relay = Relay::bind(o, a.output.events())?;
    let stop = relay.stop_handle();
    on_signal(move || stop.stop())?;
    relay.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_with_or_without_a_prefix() {
        assert_eq!(parse_net("10.0.0.0/8").unwrap().1, 8);
        assert_eq!(parse_net("10.1.2.3").unwrap().1, 32);
        assert_eq!(parse_net("fd00::/8").unwrap().1, 8);
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("nope/8").is_err());
    }
}
