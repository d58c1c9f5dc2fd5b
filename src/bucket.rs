//! Bucket administration on S3 and S3-compatible services: name validation, creating a missing
//! bucket (`create_if_not_found`) and deleting an emptied one. `object_store` has no bucket
//! calls, so these two requests are signed with `rusty-s3` (SigV4, presigned) and sent with
//! the HTTP client object_store already uses.

use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::store::S3Options;

/// Check a bucket name against S3's rules (which S3-compatible services share): 3 to 63
/// characters of lower-case letters, digits, `.` and `-`; begins and ends with a letter or
/// digit; no `..`; not an IP address; not the reserved `xn--` / `sthree-` prefixes or
/// `-s3alias` / `--ol-s3` suffixes.
///
/// # Errors
/// [`Error::InvalidArgument`] saying which rule the name breaks.
pub fn validate_s3_bucket_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidArgument(format!("bucket name {name:?}: {why}")));
    if !(3..=63).contains(&name.len()) {
        return bad("use 3 to 63 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
        return bad("use only lower-case letters, digits, '.' and '-'");
    }
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge(name.as_bytes()[0]) || !edge(name.as_bytes()[name.len() - 1]) {
        return bad("begin and end with a letter or digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return bad("no '..', '.-' or '-.'");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("must not look like an IP address");
    }
    if name.starts_with("xn--")
        || name.starts_with("sthree-")
        || name.ends_with("-s3alias")
        || name.ends_with("--ol-s3")
    {
        return bad("uses a prefix or suffix S3 reserves");
    }
    Ok(())
}

fn target(o: &S3Options) -> Result<(Bucket, Credentials)> {
    let region = o.region.clone().unwrap_or_else(|| "us-east-1".into());
    let endpoint = o.endpoint.clone().unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    let url: url::Url = endpoint
        .parse()
        .map_err(|e| Error::InvalidStoreUrl { url: endpoint.clone(), reason: format!("endpoint: {e}") })?;
    let style = if o.endpoint.is_some() { UrlStyle::Path } else { UrlStyle::VirtualHost };
    let bucket = Bucket::new(url, style, o.bucket.clone(), region)
        .map_err(|e| Error::InvalidStoreUrl { url: o.url(), reason: e.to_string() })?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let key = o.access_key.clone().or_else(|| env("AWS_ACCESS_KEY_ID"));
    let secret = o.secret_key.clone().or_else(|| env("AWS_SECRET_ACCESS_KEY"));
    let (Some(key), Some(secret)) = (key, secret) else {
        return Err(Error::InvalidArgument(
            "creating or deleting a bucket needs access_key and secret_key (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
                .into(),
        ));
    };
    let creds = match env("AWS_SESSION_TOKEN") {
        Some(t) if o.access_key.is_none() => Credentials::new_with_token(key, secret, t),
        _ => Credentials::new(key, secret),
    };
    Ok((bucket, creds))
}

/// Send one presigned request; `Ok(status, body)`.
fn send(rt: &Handle, method: reqwest::Method, url: url::Url, body: String) -> Result<(u16, String)> {
    let shown = format!("{}://{}{}", url.scheme(), url.host_str().unwrap_or(""), url.path());
    rt.block_on(async move {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Internal(format!("http client: {e}")))?;
        let resp = client
            .request(method, url.as_str())
            .header(reqwest::header::CONTENT_LENGTH, body.len())
            .body(body)
            .send()
            .await
            .map_err(|e| Error::Unreachable { store: shown.clone(), reason: e.to_string() })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Ok((status, text))
    })
}

fn failure(o: &S3Options, what: &str, status: u16, body: &str) -> Error {
    let code = body.split("<Code>").nth(1).and_then(|s| s.split("</Code>").next()).unwrap_or("").to_string();
    let store = o.url();
    match (status, code.as_str()) {
        (403, _) | (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied") => {
            Error::AccessDenied { store, reason: format!("{what}: {status} {code}") }
        }
        (404, _) | (_, "NoSuchBucket") => Error::BucketNotFound { bucket: o.bucket.clone(), store },
        _ => Error::InvalidArgument(format!("{what} {} at {store}: HTTP {status} {code}", o.bucket)),
    }
}

/// Create the bucket. `Ok(false)` when it already exists and is ours.
///
/// # Errors
/// [`Error::InvalidArgument`] for a bad name or a refusal (e.g. the name is taken by another
/// account), [`Error::AccessDenied`], [`Error::Unreachable`].
pub fn create_s3_bucket(o: &S3Options, rt: &Handle) -> Result<bool> {
    validate_s3_bucket_name(&o.bucket)?;
    let (bucket, creds) = target(o)?;
    let action = bucket.create_bucket(&creds);
    let body = action.body();
    let url = action.sign(Duration::from_secs(300));
    let (status, text) = send(rt, reqwest::Method::PUT, url, body)?;
    match status {
        200..=299 => Ok(true),
        409 if text.contains("BucketAlreadyOwnedByYou") => Ok(false),
        409 => Err(Error::InvalidArgument(format!(
            "bucket {} exists and belongs to someone else: choose another name",
            o.bucket
        ))),
        _ => Err(failure(o, "create bucket", status, &text)),
    }
}

/// Delete an empty bucket.
///
/// # Errors
/// [`Error::BucketNotFound`], [`Error::AccessDenied`], or the service's refusal (e.g. the bucket
/// still holds objects that are not ccfs's).
pub fn delete_s3_bucket(o: &S3Options, rt: &Handle) -> Result<()> {
    let (bucket, creds) = target(o)?;
    let url = bucket.delete_bucket(&creds).sign(Duration::from_secs(300));
    let (status, text) = send(rt, reqwest::Method::DELETE, url, String::new())?;
    match status {
        200..=299 => Ok(()),
        _ => Err(failure(o, "delete bucket", status, &text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket.v2", "a1b", &"x".repeat(63)] {
            validate_s3_bucket_name(ok).unwrap();
        }
        for bad in [
            "ab",
            "Upper",
            "a_b",
            "-ab",
            "ab-",
            "a..b",
            "a.-b",
            "192.168.1.1",
            "xn--abc",
            "abc-s3alias",
            &"x".repeat(64),
        ] {
            assert!(validate_s3_bucket_name(bad).is_err(), "{bad}");
        }
    }
}
