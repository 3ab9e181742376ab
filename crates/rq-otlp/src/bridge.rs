//! A `metrics` recorder that records into OpenTelemetry instruments, so that what the node
//! records for `/metrics` is exported over OTLP too, under the same names and labels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

/// The recorder. Instruments are made once per name; each registered key keeps its labels as
/// attributes.
pub struct Bridge {
    meter: Meter,
    /// Boundaries of histograms in seconds (names ending `_seconds`), and of the others.
    seconds: &'static [f64],
    counts: &'static [f64],
    descriptions: Mutex<HashMap<String, String>>,
    counters: Mutex<HashMap<String, opentelemetry::metrics::Counter<u64>>>,
    gauges: Mutex<HashMap<String, opentelemetry::metrics::Gauge<f64>>>,
    histograms: Mutex<HashMap<String, opentelemetry::metrics::Histogram<f64>>>,
}

impl Bridge {
    pub(crate) fn new(meter: Meter, seconds: &'static [f64], counts: &'static [f64]) -> Bridge {
        Bridge {
            meter,
            seconds,
            counts,
            descriptions: Mutex::default(),
            counters: Mutex::default(),
            gauges: Mutex::default(),
            histograms: Mutex::default(),
        }
    }

    fn describe(&self, key: KeyName, description: SharedString) {
        self.descriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.as_str().to_string(), description.to_string());
    }

    fn description(&self, name: &str) -> String {
        self.descriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

fn attributes(key: &Key) -> Vec<KeyValue> {
    key.labels()
        .map(|l| KeyValue::new(l.key().to_string(), l.value().to_string()))
        .collect()
}

struct OtelCounter(opentelemetry::metrics::Counter<u64>, Vec<KeyValue>);

impl CounterFn for OtelCounter {
    fn increment(&self, value: u64) {
        self.0.add(value, &self.1);
    }

    fn absolute(&self, _value: u64) {
        // A cumulative sum cannot be set; the node only ever increments.
    }
}

struct OtelGauge(opentelemetry::metrics::Gauge<f64>, Vec<KeyValue>, Mutex<f64>);

impl GaugeFn for OtelGauge {
    fn increment(&self, value: f64) {
        let mut v = self.2.lock().unwrap_or_else(|e| e.into_inner());
        *v += value;
        self.0.record(*v, &self.1);
    }

    fn decrement(&self, value: f64) {
        self.increment(-value);
    }

    fn set(&self, value: f64) {
        *self.2.lock().unwrap_or_else(|e| e.into_inner()) = value;
        self.0.record(value, &self.1);
    }
}

struct OtelHistogram(opentelemetry::metrics::Histogram<f64>, Vec<KeyValue>);

impl HistogramFn for OtelHistogram {
    fn record(&self, value: f64) {
        self.0.record(value, &self.1);
    }
}

impl Recorder for Bridge {
    fn describe_counter(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }

    fn describe_gauge(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }

    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        let name = key.name().to_string();
        let c = self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.clone())
            .or_insert_with(|| {
                self.meter
                    .u64_counter(name.clone())
                    .with_description(self.description(&name))
                    .build()
            })
            .clone();
        Counter::from_arc(Arc::new(OtelCounter(c, attributes(key))))
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        let name = key.name().to_string();
        let g = self
            .gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.clone())
            .or_insert_with(|| {
                self.meter
                    .f64_gauge(name.clone())
                    .with_description(self.description(&name))
                    .build()
            })
            .clone();
        Gauge::from_arc(Arc::new(OtelGauge(g, attributes(key), Mutex::new(0.0))))
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        let name = key.name().to_string();
        let h = self
            .histograms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.clone())
            .or_insert_with(|| {
                let seconds = name.ends_with("_seconds");
                let b = self
                    .meter
                    .f64_histogram(name.clone())
                    .with_description(self.description(&name))
                    .with_boundaries(if seconds { self.seconds } else { self.counts }.to_vec());
                if seconds { b.with_unit("s") } else { b }.build()
            })
            .clone();
        Histogram::from_arc(Arc::new(OtelHistogram(h, attributes(key))))
    }
}
