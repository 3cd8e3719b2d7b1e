//! `s3://` targets (being written).

use super::{ObjectWriter, S3Spec, Target, TargetError};

/// An S3 bucket and prefix.
#[derive(Debug)]
pub struct S3Target {
    spec: S3Spec,
}

impl S3Target {
    pub fn new(spec: S3Spec, _rt: tokio::runtime::Handle) -> Result<Self, TargetError> {
        Err(TargetError::Config {
            target: format!("s3://{}/{}", spec.bucket, spec.prefix),
            reason: "s3 targets are not built yet".into(),
        })
    }
}

impl S3Target {
    fn todo(&self) -> TargetError {
        TargetError::Config { target: format!("s3://{}", self.spec.bucket), reason: "not built yet".into() }
    }
}

impl Target for S3Target {
    fn describe(&self) -> String {
        format!("s3://{}", self.spec.bucket)
    }
    fn create(&self, _name: &str) -> Result<Box<dyn ObjectWriter>, TargetError> {
        Err(self.todo())
    }
    fn put_small(&self, _name: &str, _data: &[u8]) -> Result<(), TargetError> {
        Err(self.todo())
    }
    fn open(&self, _name: &str) -> Result<Box<dyn std::io::Read + Send>, TargetError> {
        Err(self.todo())
    }
    fn exists(&self, _name: &str) -> Result<bool, TargetError> {
        Err(self.todo())
    }
    fn delete(&self, _name: &str) -> Result<(), TargetError> {
        Err(self.todo())
    }
    fn cleanup(&self, _name: &str, _token: Option<&str>) -> Result<(), TargetError> {
        Err(self.todo())
    }
}
