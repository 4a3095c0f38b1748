//! The calculator service of the `calculator` example, the Python interop tests and
//! the README.

use serde::{Deserialize, Serialize};
use zmtp_rpc::rpc_service;

/// Why a calculation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CalcError {
    /// Division by zero.
    DivideByZero,
    /// The result does not fit in an i64.
    Overflow {
        /// The operation that overflowed.
        op: String,
    },
}

/// A calculator.
#[rpc_service]
pub trait Calc {
    /// `a + b`.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// `a / b`, or an error.
    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError>;
    /// `a * b`, or an error.
    async fn mul(&self, a: i64, b: i64) -> Result<i64, CalcError>;
}

/// The implementation.
pub struct MyCalc;

impl Calc for MyCalc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        if b == 0 {
            return Err(CalcError::DivideByZero);
        }
        a.checked_div(b)
            .ok_or(CalcError::Overflow { op: "div".into() })
    }
    async fn mul(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        a.checked_mul(b)
            .ok_or(CalcError::Overflow { op: "mul".into() })
    }
}
