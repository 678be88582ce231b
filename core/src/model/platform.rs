//! Client platforms (the seeds' IM server's numbering) and the platform
//! classes used by the multi-endpoint login rule of DESIGN §5.1.

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

    /// The class for the kick rule; unknown platforms count as PC, the
    /// class bots and integrations usually are.
    pub fn class(self) -> PlatformClass {
        match self {
            Platform::Ios | Platform::Android => PlatformClass::Mobile,
            Platform::Ipad | Platform::AndroidPad => PlatformClass::Pad,
            Platform::Web | Platform::MiniProgram => PlatformClass::Web,
            Platform::Windows | Platform::Osx | Platform::Linux | Platform::Unknown => {
                PlatformClass::Pc
            }
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
        assert_eq!(Platform::from_i32(2).class(), PlatformClass::Mobile);
        assert_eq!(Platform::from_i32(8).class(), PlatformClass::Pad);
        assert_eq!(Platform::from_i32(5).class(), PlatformClass::Web);
        assert_eq!(Platform::from_i32(77).class(), PlatformClass::Pc);
    }
}
