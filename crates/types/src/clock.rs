//! Where a node's wall-clock time comes from.

use tendermint::Time;

/// Where the engine's wall-clock time comes from (block and vote timestamps): the system
/// clock in a node, a simulated one in the deterministic simulator. The engine reads no clock
/// of its own.
#[derive(Clone)]
pub struct Clock(std::sync::Arc<dyn Fn() -> Time + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(std::sync::Arc::new(Time::now))
    }

    /// A clock that asks `now`.
    pub fn from_fn(now: impl Fn() -> Time + Send + Sync + 'static) -> Clock {
        Clock(std::sync::Arc::new(now))
    }

    /// The time now.
    pub fn now(&self) -> Time {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}
