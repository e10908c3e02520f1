//! Wake-on-LAN: the magic packet (6 × `0xFF`, then the MAC 16 times) sent over UDP to the
//! configured broadcast `host:port` (default `255.255.255.255:9`). Fire and forget: whether the
//! machine woke is for the readiness probe to find out.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Length of a magic packet: 6 sync bytes + 16 × 6 MAC bytes.
pub const MAGIC_PACKET_LEN: usize = 102;

/// Why a magic packet could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum WolError {
    #[error("wake-on-LAN: cannot resolve broadcast address `{broadcast}`: {source}")]
    Resolve {
        broadcast: String,
        #[source]
        source: std::io::Error,
    },
    #[error("wake-on-LAN: broadcast address `{broadcast}` resolves to nothing")]
    NoAddress { broadcast: String },
    #[error("wake-on-LAN: cannot open a UDP socket to send to {to}: {source}")]
    Socket {
        to: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("wake-on-LAN: sending the magic packet to {to} failed: {source}")]
    Send {
        to: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The magic packet that wakes the machine with this MAC address.
pub fn magic_packet(mac: [u8; 6]) -> [u8; MAGIC_PACKET_LEN] {
    let mut packet = [0xFF; MAGIC_PACKET_LEN];
    for chunk in packet[6..].chunks_exact_mut(6) {
        chunk.copy_from_slice(&mac);
    }
    packet
}

/// `aa:bb:cc:dd:ee:ff`, for logs.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Sends the magic packet for `mac` to `broadcast` (`host:port`); returns where it went.
pub async fn send_magic_packet(mac: [u8; 6], broadcast: &str) -> Result<SocketAddr, WolError> {
    let to = tokio::net::lookup_host(broadcast)
        .await
        .map_err(|source| WolError::Resolve {
            broadcast: broadcast.to_owned(),
            source,
        })?
        .next()
        .ok_or_else(|| WolError::NoAddress {
            broadcast: broadcast.to_owned(),
        })?;
    let local: SocketAddr = if to.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|source| WolError::Socket { to, source })?;
    socket
        .set_broadcast(true)
        .map_err(|source| WolError::Socket { to, source })?;
    socket
        .send_to(&magic_packet(mac), to)
        .await
        .map_err(|source| WolError::Send { to, source })?;
    tracing::info!(mac = %format_mac(mac), %to, "wake-on-LAN magic packet sent");
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_mac_then_the_packet_is_six_ff_then_the_mac_sixteen_times() {
        let mac = [0x00, 0x11, 0x22, 0xaa, 0xbb, 0xcc];
        let packet = magic_packet(mac);
        assert_eq!(&packet[..6], &[0xFF; 6]);
        for i in 0..16 {
            assert_eq!(&packet[6 + i * 6..12 + i * 6], &mac);
        }
        assert_eq!(format_mac(mac), "00:11:22:aa:bb:cc");
    }
}
