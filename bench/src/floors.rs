//! The floors docs/BENCHMARKS.md states: the least ratio to raw TCP (measured in the
//! same run) each row should reach. The suite flags a row that falls under its floor,
//! so that a regression is seen the day it happens. Each floor sits about 10% under
//! the figure the docs report, so that noise alone does not flag a row.

/// One row's floor.
struct Floor {
    kind: &'static str,
    conc: usize,
    payload: usize,
    /// Whether the floor is for runs pinned to one CPU (`BENCH_PIN`).
    pinned: bool,
    min: f64,
}

const MIB: usize = 1 << 20;

const FLOORS: &[Floor] = &[
    // Large messages through the sockets and the typed call: the bandwidth of TCP.
    Floor {
        kind: "reqrep",
        conc: 1,
        payload: MIB,
        pinned: false,
        min: 0.90,
    },
    Floor {
        kind: "dealer",
        conc: 1,
        payload: MIB,
        pinned: false,
        min: 0.90,
    },
    Floor {
        kind: "rpc",
        conc: 1,
        payload: MIB,
        pinned: false,
        min: 0.80,
    },
    Floor {
        kind: "rpc",
        conc: 16,
        payload: MIB,
        pinned: false,
        min: 0.80,
    },
    // Sixteen callers of one client against sixteen raw TCP connections.
    Floor {
        kind: "rpc",
        conc: 16,
        payload: 64,
        pinned: false,
        min: 1.00,
    },
    // One CPU for both processes: only the CPU cost of a round trip counts.
    Floor {
        kind: "rpc",
        conc: 1,
        payload: 64,
        pinned: true,
        min: 0.65,
    },
];

/// The floor of a row, if the docs state one; `conns`: connections the typed client
/// opened at the start (only the default, one, has floors).
pub fn floor(kind: &str, conns: usize, conc: usize, payload: usize, pinned: bool) -> Option<f64> {
    if conns != 1 {
        return None;
    }
    FLOORS
        .iter()
        .find(|f| f.kind == kind && f.conc == conc && f.payload == payload && f.pinned == pinned)
        .map(|f| f.min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_with_a_stated_figure_have_a_floor_and_others_none() {
        assert_eq!(floor("reqrep", 1, 1, MIB, false), Some(0.90));
        assert_eq!(floor("rpc", 1, 1, 64, true), Some(0.65));
        assert_eq!(floor("rpc", 1, 1, 64, false), None);
        assert_eq!(floor("tcp", 1, 1, MIB, false), None);
        // Only the default client (one connection at the start) has floors.
        assert_eq!(floor("rpc", 1, 16, 64, false), Some(1.00));
        assert_eq!(floor("rpc", 2, 16, 64, false), None);
    }
}
