//! Client platforms (the seeds' IM server's numbering) and the platform
//! classes used by the multi-endpoint login rule of DESIGN §5.1.
//!
//! Platform 0 (unset, and every number we do not know) is in no class: a
//! login that does not say what it is never kicks another device of the
//! user, nor is kicked by one (only a new login of the same device
//! replaces it). Two IoT devices or bots with platform-less tokens would
//! otherwise kick each other in a loop as both reconnect. A client that
//! wants the desktop rule asks for a PC platform (3 Windows, 4 macOS,
//! 7 Linux) explicitly.

/// Platform numbers as the seeds' IM server sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    Unknown,
    Ios,
    Android,
    Windows,
    Osx,
    Web,
    MiniProgram,
    Linux,
    Ipad,
    AndroidPad,
}

/// A new login kicks an older one of the same class (unless multi-endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlatformClass {
    Mobile,
    Pad,
    Pc,
    Web,
}

impl Platform {
    pub fn from_i32(v: i32) -> Platform {
        match v {
            1 => Platform::Ios,
            2 => Platform::Android,
            3 => Platform::Windows,
            4 => Platform::Osx,
            5 => Platform::Web,
            6 => Platform::MiniProgram,
            7 => Platform::Linux,
            8 => Platform::Ipad,
            9 => Platform::AndroidPad,
            _ => Platform::Unknown,
        }
    }

    pub fn as_i32(self) -> i32 {
        match self {
            Platform::Unknown => 0,
            Platform::Ios => 1,
            Platform::Android => 2,
            Platform::Windows => 3,
            Platform::Osx => 4,
            Platform::Web => 5,
            Platform::MiniProgram => 6,
            Platform::Linux => 7,
            Platform::Ipad => 8,
            Platform::AndroidPad => 9,
        }
    }

    /// The class for the kick rule; None for an unset or unknown
    /// platform, which the rule leaves alone (see the module docs).
    pub fn class(self) -> Option<PlatformClass> {
        match self {
            Platform::Ios | Platform::Android => Some(PlatformClass::Mobile),
            Platform::Ipad | Platform::AndroidPad => Some(PlatformClass::Pad),
            Platform::Web | Platform::MiniProgram => Some(PlatformClass::Web),
            Platform::Windows | Platform::Osx | Platform::Linux => Some(PlatformClass::Pc),
            Platform::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_numbers_round_trip_and_classes() {
        for v in 0..=9 {
            assert_eq!(Platform::from_i32(v).as_i32(), v);
        }
        assert_eq!(Platform::from_i32(2).class(), Some(PlatformClass::Mobile));
        assert_eq!(Platform::from_i32(8).class(), Some(PlatformClass::Pad));
        assert_eq!(Platform::from_i32(5).class(), Some(PlatformClass::Web));
        assert_eq!(Platform::from_i32(3).class(), Some(PlatformClass::Pc));
        // Unset and unknown platforms are in no class (no kick loop).
        assert_eq!(Platform::from_i32(0).class(), None);
        assert_eq!(Platform::from_i32(77).class(), None);
    }
}
