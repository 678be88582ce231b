//! PB command numbers (DESIGN §5.2 table) and their service ids.
//!
//! The command in the frame header says which `imgate.proto` message the
//! body is. The service id is the command's high byte (1 login, 3 message,
//! 7 other), as in the TeamTalk header layout the PB frame borrows.

/// Service id of the login commands (`0x01xx`).
pub const SERVICE_LOGIN: u16 = 0x01;
/// Service id of the message commands (`0x03xx`).
pub const SERVICE_MESSAGE: u16 = 0x03;
/// Service id of the other commands (`0x07xx`).
pub const SERVICE_OTHER: u16 = 0x07;

/// Client → server, the first frame; body `LoginRequest`.
pub const LOGIN_REQUEST: u16 = 0x0101;
/// Server → client; body `LoginResponse`.
pub const LOGIN_RESPONSE: u16 = 0x0102;
/// Server → client, then close; body `Kick`.
pub const KICK: u16 = 0x0103;
/// Client → server; body `SendRequest`.
pub const SEND_REQUEST: u16 = 0x0301;
/// Server → client; body `SendResponse`.
pub const SEND_RESPONSE: u16 = 0x0302;
/// Server → client push; body `Deliver`.
pub const DELIVER: u16 = 0x0303;
/// Client → server; body `DeliverAck`.
pub const DELIVER_ACK: u16 = 0x0304;
/// Client → server; body `SyncRequest`.
pub const SYNC_REQUEST: u16 = 0x0305;
/// Server → client; body `SyncResponse`.
pub const SYNC_RESPONSE: u16 = 0x0306;
/// Client → server; body `RecallRequest`.
pub const RECALL_REQUEST: u16 = 0x0307;
/// Server → client; body `RecallResponse`.
pub const RECALL_RESPONSE: u16 = 0x0308;
/// Client → server; body `ConversationsRequest`.
pub const CONVERSATIONS_REQUEST: u16 = 0x0309;
/// Server → client; body `ConversationsResponse`.
pub const CONVERSATIONS_RESPONSE: u16 = 0x030A;
/// Client → server; body `MarkReadRequest`.
pub const MARK_READ_REQUEST: u16 = 0x030B;
/// Server → client; body `MarkReadResponse`.
pub const MARK_READ_RESPONSE: u16 = 0x030C;
/// Both directions, echoed; body `Heartbeat` (empty).
pub const HEARTBEAT: u16 = 0x0701;
/// Server → client; body `Error`.
pub const ERROR: u16 = 0x0702;

/// Every command of the contract, in table order.
pub const ALL: [u16; 17] = [
    LOGIN_REQUEST,
    LOGIN_RESPONSE,
    KICK,
    SEND_REQUEST,
    SEND_RESPONSE,
    DELIVER,
    DELIVER_ACK,
    SYNC_REQUEST,
    SYNC_RESPONSE,
    RECALL_REQUEST,
    RECALL_RESPONSE,
    CONVERSATIONS_REQUEST,
    CONVERSATIONS_RESPONSE,
    MARK_READ_REQUEST,
    MARK_READ_RESPONSE,
    HEARTBEAT,
    ERROR,
];

/// The service id a frame carrying `command` has in its header.
pub const fn service_of(command: u16) -> u16 {
    command >> 8
}

/// The name of the body message of `command` (as in `imgate.proto`), or
/// `None` for a command the contract does not define.
pub fn name(command: u16) -> Option<&'static str> {
    Some(match command {
        LOGIN_REQUEST => "LoginRequest",
        LOGIN_RESPONSE => "LoginResponse",
        KICK => "Kick",
        SEND_REQUEST => "SendRequest",
        SEND_RESPONSE => "SendResponse",
        DELIVER => "Deliver",
        DELIVER_ACK => "DeliverAck",
        SYNC_REQUEST => "SyncRequest",
        SYNC_RESPONSE => "SyncResponse",
        RECALL_REQUEST => "RecallRequest",
        RECALL_RESPONSE => "RecallResponse",
        CONVERSATIONS_REQUEST => "ConversationsRequest",
        CONVERSATIONS_RESPONSE => "ConversationsResponse",
        MARK_READ_REQUEST => "MarkReadRequest",
        MARK_READ_RESPONSE => "MarkReadResponse",
        HEARTBEAT => "Heartbeat",
        ERROR => "Error",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_a_name_and_a_known_service() {
        let mut seen = std::collections::HashSet::new();
        for c in ALL {
            assert!(seen.insert(c), "duplicate command {c:#06x}");
            assert!(name(c).is_some(), "{c:#06x} has no name");
            assert!(
                [SERVICE_LOGIN, SERVICE_MESSAGE, SERVICE_OTHER].contains(&service_of(c)),
                "{c:#06x}"
            );
        }
        assert_eq!(name(0x0999), None);
        assert_eq!(service_of(SEND_REQUEST), 3);
    }
}
