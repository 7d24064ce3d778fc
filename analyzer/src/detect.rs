//! Continuous-leak detection over one stack's time series (see docs/detection.md).
