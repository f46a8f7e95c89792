//! NTLMv2 client (MS-NLMP) for WinRM over HTTP: NEGOTIATE / CHALLENGE / AUTHENTICATE with
//! extended session security, key exchange and the MIC, then the sealing WinRM's message
//! encryption needs (RC4 + HMAC-MD5 signatures, one RC4 stream per direction).
//!
//! Only NTLMv2 is spoken: the challenge must offer extended session security, 128-bit keys,
//! signing and sealing, or the handshake is refused (Windows does all of these by default).
//! The CHALLENGE is untrusted input: every field is bounds-checked.

use hmac::{Hmac, Mac};
use md4::{Digest, Md4};
use md5::Md5;
use rc4::{consts::U16, KeyInit, Rc4, StreamCipher};

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

pub(crate) const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
pub(crate) const REQUEST_TARGET: u32 = 0x0000_0004;
pub(crate) const NEGOTIATE_SIGN: u32 = 0x0000_0010;
pub(crate) const NEGOTIATE_SEAL: u32 = 0x0000_0020;
pub(crate) const NEGOTIATE_NTLM: u32 = 0x0000_0200;
pub(crate) const NEGOTIATE_ALWAYS_SIGN: u32 = 0x0000_8000;
pub(crate) const EXTENDED_SESSION_SECURITY: u32 = 0x0008_0000;
pub(crate) const NEGOTIATE_VERSION: u32 = 0x0200_0000;
pub(crate) const NEGOTIATE_128: u32 = 0x2000_0000;
pub(crate) const NEGOTIATE_KEY_EXCH: u32 = 0x4000_0000;
pub(crate) const NEGOTIATE_56: u32 = 0x8000_0000;

/// What we ask for; the AUTHENTICATE carries the intersection with the server's offer.
const CLIENT_FLAGS: u32 = NEGOTIATE_UNICODE
    | REQUEST_TARGET
    | NEGOTIATE_SIGN
    | NEGOTIATE_SEAL
    | NEGOTIATE_NTLM
    | NEGOTIATE_ALWAYS_SIGN
    | EXTENDED_SESSION_SECURITY
    | NEGOTIATE_VERSION
    | NEGOTIATE_128
    | NEGOTIATE_KEY_EXCH
    | NEGOTIATE_56;

/// The flags sealing cannot do without.
const REQUIRED: [(u32, &str); 4] = [
    (EXTENDED_SESSION_SECURITY, "extended session security"),
    (NEGOTIATE_128, "128-bit keys"),
    (NEGOTIATE_SEAL, "sealing"),
    (NEGOTIATE_SIGN, "signing"),
];

/// Windows 10.0, NTLM revision 15.
const VERSION: [u8; 8] = [10, 0, 0, 0, 0, 0, 0, 0x0f];

const AV_EOL: u16 = 0;
const AV_FLAGS: u16 = 6;
const AV_TIMESTAMP: u16 = 7;
const AV_FLAG_MIC_PRESENT: u32 = 0x2;
const MAX_AV_PAIRS: usize = 64;

/// Seconds from 1601-01-01 (FILETIME epoch) to 1970-01-01.
const FILETIME_UNIX_OFFSET: u64 = 11_644_473_600;

#[derive(Debug, thiserror::Error)]
pub enum NtlmError {
    #[error("malformed NTLM CHALLENGE: {0}")]
    BadChallenge(&'static str),
    #[error(
        "the server's NTLM CHALLENGE does not offer {0}, which WinRM message encryption needs"
    )]
    Missing(&'static str),
    #[error("an encrypted WinRM message from the server does not verify (bad NTLM signature)")]
    BadSignature,
    #[error("no random numbers: {0}")]
    Random(String),
}

/// Who logs in: `DOMAIN\user` splits into domain and user; a bare user has an empty domain.
#[derive(Clone)]
pub struct NtlmCredentials {
    pub domain: String,
    pub user: String,
    pub password: crate::config::Secret,
}

impl NtlmCredentials {
    pub fn from_login(login: &str, password: crate::config::Secret) -> Self {
        let (domain, user) = match login.split_once('\\') {
            Some((d, u)) => (d.to_owned(), u.to_owned()),
            None => (String::new(), login.to_owned()),
        };
        Self {
            domain,
            user,
            password,
        }
    }
}

/// The NEGOTIATE message (no domain or workstation supplied).
pub fn negotiate_message() -> Vec<u8> {
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&CLIENT_FLAGS.to_le_bytes());
    m.extend_from_slice(&[0; 16]); // empty domain and workstation fields
    m.extend_from_slice(&VERSION);
    m
}

/// The parts of a CHALLENGE the client uses.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub flags: u32,
    pub server_challenge: [u8; 8],
    /// AV pairs without the terminating MsvAvEOL, each as (id, value).
    pub target_info: Vec<(u16, Vec<u8>)>,
    /// The message as received, for the MIC.
    pub raw: Vec<u8>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Challenge {
    pub fn parse(raw: &[u8]) -> Result<Self, NtlmError> {
        if raw.get(..8) != Some(SIGNATURE.as_slice()) {
            return Err(NtlmError::BadChallenge("no NTLMSSP signature"));
        }
        if u32_at(raw, 8) != Some(2) {
            return Err(NtlmError::BadChallenge("not a CHALLENGE (type 2) message"));
        }
        let flags = u32_at(raw, 20).ok_or(NtlmError::BadChallenge("truncated header"))?;
        let server_challenge: [u8; 8] = raw
            .get(24..32)
            .and_then(|s| s.try_into().ok())
            .ok_or(NtlmError::BadChallenge("truncated server challenge"))?;
        let len = u16_at(raw, 40).ok_or(NtlmError::BadChallenge("no target info field"))? as usize;
        let offset =
            u32_at(raw, 44).ok_or(NtlmError::BadChallenge("no target info field"))? as usize;
        let info = raw
            .get(offset..offset.saturating_add(len))
            .ok_or(NtlmError::BadChallenge("target info outside the message"))?;
        let mut target_info = Vec::new();
        let mut at = 0;
        loop {
            let id =
                u16_at(info, at).ok_or(NtlmError::BadChallenge("target info not terminated"))?;
            let vlen =
                u16_at(info, at + 2).ok_or(NtlmError::BadChallenge("truncated AV pair"))? as usize;
            if id == AV_EOL {
                break;
            }
            let value = info
                .get(at + 4..at + 4 + vlen)
                .ok_or(NtlmError::BadChallenge(
                    "AV pair longer than the target info",
                ))?;
            if target_info.len() == MAX_AV_PAIRS {
                return Err(NtlmError::BadChallenge("too many AV pairs"));
            }
            target_info.push((id, value.to_vec()));
            at += 4 + vlen;
        }
        for (flag, what) in REQUIRED {
            if flags & flag == 0 {
                return Err(NtlmError::Missing(what));
            }
        }
        Ok(Self {
            flags,
            server_challenge,
            target_info,
            raw: raw.to_vec(),
        })
    }

    fn timestamp(&self) -> Option<[u8; 8]> {
        self.target_info
            .iter()
            .find(|(id, _)| *id == AV_TIMESTAMP)
            .and_then(|(_, v)| v.as_slice().try_into().ok())
    }
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn rc4_once(key: &[u8; 16], data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    Rc4::<U16>::new(key.into()).apply_keystream(&mut out);
    out
}

/// NTOWFv2 (MS-NLMP 3.3.2): HMAC_MD5(MD4(UNICODE(password)), UNICODE(UPPER(user) + domain)).
pub fn ntowf_v2(user: &str, domain: &str, password: &str) -> [u8; 16] {
    let nt_hash: [u8; 16] = Md4::digest(utf16le(password)).into();
    let who = utf16le(&(user.to_uppercase() + domain));
    hmac_md5(&nt_hash, &[&who])
}

/// The random parts of an AUTHENTICATE, separate so tests can use the spec's values.
pub struct Randomness {
    pub client_challenge: [u8; 8],
    pub exported_session_key: [u8; 16],
    /// FILETIME used when the server sent no MsvAvTimestamp.
    pub now: [u8; 8],
}

impl Randomness {
    pub fn generate() -> Result<Self, NtlmError> {
        let mut bytes = [0u8; 24];
        getrandom::getrandom(&mut bytes).map_err(|e| NtlmError::Random(e.to_string()))?;
        let mut client_challenge = [0u8; 8];
        let mut exported_session_key = [0u8; 16];
        client_challenge.copy_from_slice(&bytes[..8]);
        exported_session_key.copy_from_slice(&bytes[8..]);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let ticks = (unix.as_secs() + FILETIME_UNIX_OFFSET) * 10_000_000
            + u64::from(unix.subsec_nanos() / 100);
        Ok(Self {
            client_challenge,
            exported_session_key,
            now: ticks.to_le_bytes(),
        })
    }
}

/// The responses of MS-NLMP 3.3.2, exposed for the known-answer tests.
pub struct V2Responses {
    pub nt_challenge_response: Vec<u8>,
    pub lm_challenge_response: Vec<u8>,
    pub session_base_key: [u8; 16],
}

/// ComputeResponse for NTLMv2. `server_name` is the AV pair list as sent (EOL included).
pub fn compute_v2(
    response_key: &[u8; 16],
    server_challenge: &[u8; 8],
    client_challenge: &[u8; 8],
    time: &[u8; 8],
    server_name: &[u8],
    lm_zero: bool,
) -> V2Responses {
    let mut temp = Vec::with_capacity(28 + server_name.len() + 4);
    temp.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0]);
    temp.extend_from_slice(time);
    temp.extend_from_slice(client_challenge);
    temp.extend_from_slice(&[0; 4]);
    temp.extend_from_slice(server_name);
    temp.extend_from_slice(&[0; 4]);
    let nt_proof = hmac_md5(response_key, &[server_challenge, &temp]);
    let mut nt = nt_proof.to_vec();
    nt.extend_from_slice(&temp);
    // With a server timestamp the LM response is all zeros (MS-NLMP 3.1.5.1.2).
    let lm = if lm_zero {
        vec![0; 24]
    } else {
        let mut lm = hmac_md5(response_key, &[server_challenge, client_challenge]).to_vec();
        lm.extend_from_slice(client_challenge);
        lm
    };
    V2Responses {
        nt_challenge_response: nt,
        lm_challenge_response: lm,
        session_base_key: hmac_md5(response_key, &[&nt_proof]),
    }
}

/// Builds the AUTHENTICATE for `challenge`; returns it and the sealing state for the session.
pub fn authenticate(
    creds: &NtlmCredentials,
    negotiate: &[u8],
    challenge: &Challenge,
    random: &Randomness,
) -> (Vec<u8>, Sealer) {
    let flags = (challenge.flags & CLIENT_FLAGS) | NEGOTIATE_UNICODE;
    let server_time = challenge.timestamp();
    let time = server_time.unwrap_or(random.now);

    // The AV pairs we echo: the server's, plus "MIC present" when the server sent a timestamp
    // (MS-NLMP 3.1.5.1.2), then EOL.
    let mut pairs = challenge.target_info.clone();
    let with_mic = server_time.is_some();
    if with_mic {
        match pairs.iter_mut().find(|(id, _)| *id == AV_FLAGS) {
            Some((_, v)) => {
                let old = u32_at(v, 0).unwrap_or(0);
                *v = (old | AV_FLAG_MIC_PRESENT).to_le_bytes().to_vec();
            }
            None => pairs.push((AV_FLAGS, AV_FLAG_MIC_PRESENT.to_le_bytes().to_vec())),
        }
    }
    let mut server_name = Vec::new();
    for (id, v) in &pairs {
        server_name.extend_from_slice(&id.to_le_bytes());
        server_name.extend_from_slice(&(v.len() as u16).to_le_bytes());
        server_name.extend_from_slice(v);
    }
    server_name.extend_from_slice(&[0; 4]);

    let key = ntowf_v2(&creds.user, &creds.domain, creds.password.expose());
    let r = compute_v2(
        &key,
        &challenge.server_challenge,
        &random.client_challenge,
        &time,
        &server_name,
        server_time.is_some(),
    );
    // NTLMv2: KeyExchangeKey = SessionBaseKey.
    let (exported, encrypted_key) = if flags & NEGOTIATE_KEY_EXCH != 0 {
        (
            random.exported_session_key,
            rc4_once(&r.session_base_key, &random.exported_session_key),
        )
    } else {
        (r.session_base_key, Vec::new())
    };

    let domain = utf16le(&creds.domain);
    let user = utf16le(&creds.user);
    let workstation: Vec<u8> = Vec::new();
    const HEADER: usize = 88;
    let payloads: [&[u8]; 6] = [
        &r.lm_challenge_response,
        &r.nt_challenge_response,
        &domain,
        &user,
        &workstation,
        &encrypted_key,
    ];
    let mut offsets = [0u32; 6];
    let mut at = HEADER;
    for (i, p) in payloads.iter().enumerate() {
        offsets[i] = at as u32;
        at += p.len();
    }
    let mut m = Vec::with_capacity(at);
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&3u32.to_le_bytes());
    for (p, off) in payloads.iter().zip(offsets) {
        let len = p.len() as u16;
        m.extend_from_slice(&len.to_le_bytes());
        m.extend_from_slice(&len.to_le_bytes());
        m.extend_from_slice(&off.to_le_bytes());
    }
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&VERSION);
    m.extend_from_slice(&[0; 16]); // MIC, filled below
    for p in payloads {
        m.extend_from_slice(p);
    }
    if with_mic {
        let mic = hmac_md5(&exported, &[negotiate, &challenge.raw, &m]);
        m[72..88].copy_from_slice(&mic);
    }
    (m, Sealer::new(&exported))
}

/// Connection-oriented NTLM sealing with extended session security and 128-bit keys: one RC4
/// stream and one sequence number per direction (MS-NLMP 3.4.3, 3.4.4.2).
pub struct Sealer {
    client_sign: [u8; 16],
    server_sign: [u8; 16],
    client_seal: Rc4<U16>,
    server_seal: Rc4<U16>,
    client_seq: u32,
    server_seq: u32,
}

const C2S_SIGN: &[u8] = b"session key to client-to-server signing key magic constant\0";
const S2C_SIGN: &[u8] = b"session key to server-to-client signing key magic constant\0";
const C2S_SEAL: &[u8] = b"session key to client-to-server sealing key magic constant\0";
const S2C_SEAL: &[u8] = b"session key to server-to-client sealing key magic constant\0";

impl Sealer {
    pub fn new(exported_session_key: &[u8; 16]) -> Self {
        let k = exported_session_key;
        Self {
            client_sign: md5(&[k, C2S_SIGN]),
            server_sign: md5(&[k, S2C_SIGN]),
            client_seal: Rc4::new((&md5(&[k, C2S_SEAL])).into()),
            server_seal: Rc4::new((&md5(&[k, S2C_SEAL])).into()),
            client_seq: 0,
            server_seq: 0,
        }
    }

    /// Seals a client message: (16-byte signature, ciphertext).
    pub fn seal(&mut self, message: &[u8]) -> ([u8; 16], Vec<u8>) {
        let seq = self.client_seq.to_le_bytes();
        self.client_seq = self.client_seq.wrapping_add(1);
        let mut sealed = message.to_vec();
        self.client_seal.apply_keystream(&mut sealed);
        let mac = hmac_md5(&self.client_sign, &[&seq, message]);
        let mut checksum = [0u8; 8];
        checksum.copy_from_slice(&mac[..8]);
        self.client_seal.apply_keystream(&mut checksum);
        let mut sig = [0u8; 16];
        sig[..4].copy_from_slice(&1u32.to_le_bytes());
        sig[4..12].copy_from_slice(&checksum);
        sig[12..].copy_from_slice(&seq);
        (sig, sealed)
    }

    /// Unseals and verifies a server message.
    pub fn unseal(&mut self, signature: &[u8], sealed: &[u8]) -> Result<Vec<u8>, NtlmError> {
        if signature.len() != 16 {
            return Err(NtlmError::BadSignature);
        }
        let seq = self.server_seq.to_le_bytes();
        self.server_seq = self.server_seq.wrapping_add(1);
        let mut message = sealed.to_vec();
        self.server_seal.apply_keystream(&mut message);
        let mac = hmac_md5(&self.server_sign, &[&seq, &message]);
        let mut checksum = [0u8; 8];
        checksum.copy_from_slice(&mac[..8]);
        self.server_seal.apply_keystream(&mut checksum);
        if signature[..4] != 1u32.to_le_bytes()
            || signature[4..12] != checksum
            || signature[12..] != seq
        {
            return Err(NtlmError::BadSignature);
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    //! Known answers from MS-NLMP 4.2.4 (NTLMv2): User "User", domain "Domain", password
    //! "Password", server challenge 0123456789abcdef, client challenge aa.., time 0,
    //! random session key 55.., AV pairs NbDomainName "Domain", NbComputerName "Server".
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const AV: &str = "02000c0044006f006d00610069006e0001000c0053006500720076006500720000000000";
    /// The spec's CHALLENGE message (4.2.4.3) with the target info above.
    const CHALLENGE: &str = "4e544c4d53535000020000000c000c003800000033828ae20123456789abcdef00000000000000002400240044000000060070170000000f53006500720076006500720002000c0044006f006d00610069006e0001000c0053006500720076006500720000000000";

    #[test]
    fn ntowfv2_known_answer() {
        assert_eq!(
            ntowf_v2("User", "Domain", "Password").to_vec(),
            hex("0c868a403bfd7a93a3001ef22ef02e3f")
        );
    }

    #[test]
    fn responses_and_keys_known_answer() {
        let key = ntowf_v2("User", "Domain", "Password");
        let r = compute_v2(
            &key,
            &hex("0123456789abcdef").try_into().unwrap(),
            &[0xaa; 8],
            &[0; 8],
            &hex(AV),
            false,
        );
        assert_eq!(
            r.lm_challenge_response,
            hex("86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa")
        );
        assert_eq!(
            r.nt_challenge_response[..16],
            hex("68cd0ab851e51c96aabc927bebef6a1c")[..]
        );
        assert_eq!(
            r.session_base_key.to_vec(),
            hex("8de40ccadbc14a82f15cb0ad0de95ca3")
        );
        assert_eq!(
            rc4_once(&r.session_base_key, &[0x55; 16]),
            hex("c5dad2544fc9799094ce1ce90bc9d03e")
        );
    }

    #[test]
    fn sealing_known_answer() {
        // 4.2.4.4: GSS_WrapEx of "Plaintext" (UTF-16LE), sequence number 0.
        let mut s = Sealer::new(&[0x55; 16]);
        assert_eq!(
            s.client_sign.to_vec(),
            hex("4788dc861b4782f35d43fd98fe1a2d39")
        );
        let (sig, sealed) = s.seal(&utf16le("Plaintext"));
        assert_eq!(sealed, hex("54e50165bf1936dc996020c1811b0f06fb5f"));
        assert_eq!(sig.to_vec(), hex("010000007fb38ec5c55d497600000000"));
    }

    #[test]
    fn spec_challenge_parses_and_authenticate_carries_the_spec_responses() {
        let c = Challenge::parse(&hex(CHALLENGE)).unwrap();
        assert_eq!(c.flags, 0xe28a8233);
        assert_eq!(c.server_challenge.to_vec(), hex("0123456789abcdef"));
        assert_eq!(c.target_info.len(), 2);
        let creds =
            NtlmCredentials::from_login("Domain\\User", crate::config::Secret::new("Password"));
        let random = Randomness {
            client_challenge: [0xaa; 8],
            exported_session_key: [0x55; 16],
            now: [0; 8],
        };
        let (m, _) = authenticate(&creds, &negotiate_message(), &c, &random);
        let field = |at: usize| {
            let len = u16_at(&m, at).unwrap() as usize;
            let off = u32_at(&m, at + 4).unwrap() as usize;
            m[off..off + len].to_vec()
        };
        assert_eq!(
            field(12),
            hex("86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa")
        );
        assert_eq!(field(20)[..16], hex("68cd0ab851e51c96aabc927bebef6a1c")[..]);
        assert_eq!(field(28), utf16le("Domain"));
        assert_eq!(field(36), utf16le("User"));
        assert_eq!(field(52), hex("c5dad2544fc9799094ce1ce90bc9d03e"));
        // No server timestamp in the spec's challenge: no MIC.
        assert_eq!(m[72..88], [0; 16]);
    }

    #[test]
    fn server_direction_round_trips_and_tampering_is_caught() {
        // Play the server with the mirrored keys.
        let key = [7u8; 16];
        let mut client = Sealer::new(&key);
        let mut server = Sealer {
            client_sign: client.server_sign,
            server_sign: client.client_sign,
            client_seal: Rc4::new((&md5(&[&key, S2C_SEAL])).into()),
            server_seal: Rc4::new((&md5(&[&key, C2S_SEAL])).into()),
            client_seq: 0,
            server_seq: 0,
        };
        for text in ["first", "second message"] {
            let (sig, sealed) = server.seal(text.as_bytes());
            assert_eq!(client.unseal(&sig, &sealed).unwrap(), text.as_bytes());
        }
        let (sig, mut sealed) = server.seal(b"third");
        sealed[0] ^= 1;
        match client.unseal(&sig, &sealed) {
            Err(e) => assert_eq!(format!("{e:?}"), r#"BadSignature"#),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn hostile_challenges_are_refused_without_panics() {
        let good = hex(CHALLENGE);
        for cut in 0..good.len() {
            let _ = Challenge::parse(&good[..cut]);
        }
        let mut weak = good.clone();
        weak[20..24].copy_from_slice(&(0xe28a8233u32 & !EXTENDED_SESSION_SECURITY).to_le_bytes());
        assert!(matches!(
            Challenge::parse(&weak),
            Err(NtlmError::Missing("extended session security"))
        ));
        let mut far = good;
        far[44..48].copy_from_slice(&u32::MAX.to_le_bytes());
        match Challenge::parse(&far) {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"BadChallenge("target info outside the message")"#
            ),
            Ok(_) => panic!("accepted"),
        }
    }
}
