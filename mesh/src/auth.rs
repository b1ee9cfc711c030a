//! Authenticating mesh polls with the shared secret: a request carries an HMAC-SHA256 of
//! its method, path, sender and time; the answer carries one of the request's time and
//! the body, so a forged or replayed answer is refused too.

use ring::hmac;

/// The request header.
pub const REQUEST_HEADER: &str = "x-meridian-mesh";
/// The answer header.
pub const ANSWER_HEADER: &str = "x-meridian-mesh-signature";
/// How far a request's time may be from the receiver's clock.
pub const MAX_SKEW_SECS: u64 = 30;

/// The shared secret as an HMAC key.
#[derive(Clone)]
pub struct Key(hmac::Key);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Key {
    /// The key of `secret`.
    pub fn new(secret: &str) -> Self {
        Key(hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()))
    }

    fn sign(&self, parts: &[&[u8]]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        for p in parts {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        hex(ctx.sign().as_ref())
    }

    /// The request header value for `from` polling `path` at `unix` seconds.
    pub fn request(&self, from: &str, path: &str, unix: u64) -> String {
        let sig = self.sign(&[
            b"GET",
            path.as_bytes(),
            from.as_bytes(),
            &unix.to_be_bytes(),
        ]);
        format!("{from} {unix} {sig}")
    }

    /// Checks a request header; returns the sender's name and time.
    pub fn verify_request(&self, header: &str, path: &str, now_unix: u64) -> Option<(String, u64)> {
        let mut it = header.split(' ');
        let (from, unix, sig) = (it.next()?, it.next()?.parse::<u64>().ok()?, it.next()?);
        if it.next().is_some() || now_unix.abs_diff(unix) > MAX_SKEW_SECS {
            return None;
        }
        let want = self.sign(&[
            b"GET",
            path.as_bytes(),
            from.as_bytes(),
            &unix.to_be_bytes(),
        ]);
        same(want.as_bytes(), sig.as_bytes()).then(|| (from.to_string(), unix))
    }

    /// The answer header for a request made at `unix` with `status` and `body`.
    pub fn answer(&self, unix: u64, status: u16, body: &[u8]) -> String {
        self.sign(&[&unix.to_be_bytes(), &status.to_be_bytes(), body])
    }

    /// Checks an answer header.
    pub fn verify_answer(&self, header: &str, unix: u64, status: u16, body: &[u8]) -> bool {
        same(
            self.answer(unix, status, body).as_bytes(),
            header.trim().as_bytes(),
        )
    }
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_verify_only_with_the_same_secret_and_contents() {
        let k = Key::new("0123456789abcdef-secret");
        let h = k.request("eu-1", "/mesh/v1/state", 1_000);
        assert_eq!(
            k.verify_request(&h, "/mesh/v1/state", 1_010),
            Some(("eu-1".to_string(), 1_000))
        );
        assert_eq!(
            k.verify_request(&h, "/mesh/v1/state", 1_100),
            None,
            "too old"
        );
        assert_eq!(k.verify_request(&h, "/other", 1_000), None, "another path");
        let other = Key::new("another-secret-0123456789");
        assert_eq!(other.verify_request(&h, "/mesh/v1/state", 1_000), None);
        let forged = h.replace("eu-1", "us-1");
        assert_eq!(k.verify_request(&forged, "/mesh/v1/state", 1_000), None);
        let a = k.answer(1_000, 200, b"{}");
        assert!(k.verify_answer(&a, 1_000, 200, b"{}"));
        assert!(!k.verify_answer(&a, 1_000, 200, b"{ }"), "another body");
        assert!(!k.verify_answer(&a, 999, 200, b"{}"), "a replayed answer");
        assert!(!other.verify_answer(&a, 1_000, 200, b"{}"));
    }
}
