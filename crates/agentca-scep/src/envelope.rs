//! CMS EnvelopedData with RSA key transport (RFC 5652 §6), as SCEP's pkcsPKIEnvelope.
//!
//! Decryption is built so that its failures cannot be told apart: a recipient that does not
//! match, an RSA block that does not decrypt or unpad, a content key of the wrong length, an IV
//! of the wrong length, ciphertext that is not whole blocks, bad CBC padding and a plaintext
//! that is not one DER value all return [`ScepError::Decryption`]. Once our recipient is found,
//! the content decryption runs whatever the RSA step gave (a random key stands in for a
//! missing or ill-sized one), so the failures that depend on the RA key also take the same
//! path. What the envelope says in the clear — whom it names, which algorithms — is not
//! secret, and refusing an algorithm is reported as such (badAlg).

use aws_lc_rs::rsa::{Pkcs1PrivateDecryptingKey, Pkcs1PublicEncryptingKey, PublicEncryptingKey};
use cbc::cipher::block_padding::{NoPadding, Pkcs7};
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use zeroize::Zeroizing;

use crate::alg::{ContentCipher, ScepOptions};
use crate::cert::{CertInfo, PublicKey};
use crate::der;
use crate::error::{Result, ScepError};
use crate::oid;
use crate::signed;

/// The decrypted content of an envelope, and the algorithm it was encrypted with.
#[derive(Clone, Debug)]
pub(crate) struct Opened {
    pub(crate) content: Vec<u8>,
    pub(crate) cipher: ContentCipher,
}

/// Decrypts an EnvelopedData (in a ContentInfo, BER accepted) addressed to `recipient`.
pub(crate) fn open(
    input: &[u8],
    recipient: &CertInfo,
    key: &Pkcs1PrivateDecryptingKey,
    options: &ScepOptions,
) -> Result<Opened> {
    let ed_der = signed::decode_content_info(input, &oid::ENVELOPED_DATA, "envelopedData")?;
    let ed = der::single(&ed_der, der::SEQUENCE, "EnvelopedData")?;
    let mut r = ed.reader();
    let version = r.read_small_uint("EnvelopedData version")?;
    if version > 4 {
        return Err(ScepError::Malformed("EnvelopedData version"));
    }
    let _originator_info = r.read_optional(der::context(0))?;
    let recipient_infos = r.read(der::SET, "recipientInfos")?;
    let eci = r.read(der::SEQUENCE, "encryptedContentInfo")?;
    let _unprotected = r.read_optional(der::context(1))?;
    r.finish("EnvelopedData")?;

    // encryptedContentInfo: the algorithm is public, so refusing one is not an oracle.
    let mut e = eci.reader();
    let _content_type = e.read(der::OID, "encryptedContentInfo contentType")?;
    let alg = der::read_algorithm(&mut e, "contentEncryptionAlgorithm")?;
    let cipher = ContentCipher::from_oid(alg.oid, options)?;
    let ciphertext = match e.peek_tag() {
        Some(t) if t == der::context_primitive(0) => e.read_any()?.content.to_vec(),
        // BER sends the implicit OCTET STRING constructed, in chunks.
        Some(t) if t == der::context(0) => {
            let chunks = e.read_any()?;
            let mut c = chunks.reader();
            let mut joined = Vec::new();
            while !c.is_empty() {
                joined.extend_from_slice(
                    c.read(der::OCTET_STRING, "encryptedContent chunk")?.content,
                );
            }
            joined
        }
        _ => return Err(ScepError::Malformed("encryptedContent absent")),
    };
    e.finish("encryptedContentInfo")?;

    // Our recipient, among possibly several (clients encrypt to every certificate GetCACert
    // returned). Only key transport can name us.
    let mut ours = None;
    let mut ri = recipient_infos.reader();
    while !ri.is_empty() {
        let info = ri.read_any()?;
        if info.tag != der::SEQUENCE {
            continue; // kari [1], kekri [2], pwri [3], ori [4]
        }
        let mut k = info.reader();
        let _version = k.read_small_uint("KeyTransRecipientInfo version")?;
        let rid = k.read_any()?;
        let key_alg = der::read_algorithm(&mut k, "keyEncryptionAlgorithm")?;
        let encrypted_key = k.read(der::OCTET_STRING, "encryptedKey")?;
        k.finish("KeyTransRecipientInfo")?;
        let is_ours = match rid.tag {
            der::SEQUENCE => recipient.matches_issuer_serial(rid.content),
            t if t == der::context_primitive(0) => recipient.matches_key_id(rid.content),
            _ => false,
        };
        if is_ours && ours.is_none() {
            ours = Some((key_alg, encrypted_key.content));
        }
    }
    let Some((key_alg, encrypted_key)) = ours else {
        return Err(ScepError::Decryption);
    };
    if !oid::is(key_alg.oid, &oid::RSA_ENCRYPTION) {
        return Err(crate::alg::unsupported(
            "key-transport algorithm",
            key_alg.oid,
        ));
    }
    let iv = match alg.params {
        Some(p) if p.tag == der::OCTET_STRING => p.content,
        _ => &[],
    };
    let content = decrypt_uniformly(key, encrypted_key, cipher, iv, &ciphertext)?;
    Ok(Opened { content, cipher })
}

/// RSA PKCS#1 v1.5 then CBC, with one outcome for every failure.
fn decrypt_uniformly(
    key: &Pkcs1PrivateDecryptingKey,
    encrypted_key: &[u8],
    cipher: ContentCipher,
    iv: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>> {
    let mut cek_buf = Zeroizing::new(vec![0u8; key.min_output_size()]);
    let mut random_cek = Zeroizing::new(vec![0u8; cipher.key_len()]);
    aws_lc_rs::rand::fill(&mut random_cek).map_err(|_| ScepError::Crypto("random key"))?;

    let (cek, mut ok): (&[u8], bool) = match key.decrypt(encrypted_key, &mut cek_buf) {
        Ok(cek) if cek.len() == cipher.key_len() => (cek, true),
        _ => (&random_cek, false),
    };
    // An IV of the wrong length gets a zero IV, so the decryption below still runs.
    let zero_iv = [0u8; 16];
    let iv_ok = iv.len() == cipher.block_len();
    ok &= iv_ok;
    let iv = if iv_ok {
        iv
    } else {
        &zero_iv[..cipher.block_len()]
    };

    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let plaintext = cbc_decrypt(cipher, cek, iv, &mut buf);
    match plaintext {
        Some(pt) if ok && signed::check_single_sequence(pt, "content").is_ok() => Ok(pt.to_vec()),
        _ => Err(ScepError::Decryption),
    }
}

macro_rules! with_cipher {
    ($cipher:expr, $c:ident => $body:expr) => {
        match $cipher {
            ContentCipher::Aes128Cbc => {
                type $c = aes::Aes128;
                $body
            }
            ContentCipher::Aes192Cbc => {
                type $c = aes::Aes192;
                $body
            }
            ContentCipher::Aes256Cbc => {
                type $c = aes::Aes256;
                $body
            }
            ContentCipher::DesCbc => {
                type $c = des::Des;
                $body
            }
            ContentCipher::DesEde3Cbc => {
                type $c = des::TdesEde3;
                $body
            }
        }
    };
}

fn cbc_decrypt<'b>(
    cipher: ContentCipher,
    key: &[u8],
    iv: &[u8],
    buf: &'b mut [u8],
) -> Option<&'b [u8]> {
    with_cipher!(cipher, C => {
        let dec = cbc::Decryptor::<C>::new_from_slices(key, iv).ok()?;
        dec.decrypt_padded::<Pkcs7>(buf).ok()
    })
}

fn cbc_encrypt(
    cipher: ContentCipher,
    key: &[u8],
    iv: &[u8],
    plaintext: &[u8],
    bad_padding: bool,
) -> Result<Vec<u8>> {
    let block = cipher.block_len();
    let pad = block - plaintext.len() % block;
    let mut buf = plaintext.to_vec();
    // PKCS#7 padding; a zero pad byte is never valid, which is what the tamper knob wants.
    let pad_byte = if bad_padding { 0 } else { pad as u8 };
    buf.extend(std::iter::repeat_n(pad_byte, pad));
    let len = buf.len();
    let failed = || ScepError::Crypto("CBC encryption");
    with_cipher!(cipher, C => {
        let enc = cbc::Encryptor::<C>::new_from_slices(key, iv).map_err(|_| failed())?;
        enc.encrypt_padded::<NoPadding>(&mut buf, len).map_err(|_| failed())?;
    });
    Ok(buf)
}

/// Deliberate defects for negative tests (see `client::Tamper`).
#[derive(Clone, Debug, Default)]
pub(crate) struct EnvelopeTamper {
    /// RSA-encrypt these bytes instead of the content key.
    pub(crate) cek_override: Option<Vec<u8>>,
    /// Flip a bit of the RSA ciphertext.
    pub(crate) corrupt_encrypted_key: bool,
    /// Pad the content with invalid PKCS#7 padding.
    pub(crate) bad_cbc_padding: bool,
    /// Name the recipient by subjectKeyIdentifier (KTRI version 2) instead of issuer and
    /// serial number.
    pub(crate) recipient_by_key_id: bool,
}

/// Encrypts `content` to `recipient`'s RSA key (key transport, recipient named by issuer and
/// serial number, as every SCEP client looks for it) and returns the ContentInfo DER.
pub(crate) fn seal(
    content: &[u8],
    recipient: &CertInfo,
    cipher: ContentCipher,
    tamper: &EnvelopeTamper,
) -> Result<Vec<u8>> {
    if !matches!(recipient.key, PublicKey::Rsa(_)) {
        return Err(ScepError::UnsupportedAlgorithm {
            what: "recipient key (key transport needs RSA)",
            oid: match &recipient.key {
                PublicKey::Other(name) => name.clone(),
                _ => "EC".into(),
            },
        });
    }
    let mut cek = Zeroizing::new(vec![0u8; cipher.key_len()]);
    let mut iv = vec![0u8; cipher.block_len()];
    aws_lc_rs::rand::fill(&mut cek).map_err(|_| ScepError::Crypto("random key"))?;
    aws_lc_rs::rand::fill(&mut iv).map_err(|_| ScepError::Crypto("random IV"))?;
    let ciphertext = cbc_encrypt(cipher, &cek, &iv, content, tamper.bad_cbc_padding)?;

    let public = PublicEncryptingKey::from_der(&recipient.spki)
        .map_err(|_| ScepError::Key("recipient RSA key rejected"))?;
    let public = Pkcs1PublicEncryptingKey::new(public)
        .map_err(|_| ScepError::Key("recipient RSA key rejected"))?;
    let key_to_wrap: &[u8] = tamper.cek_override.as_deref().unwrap_or(&cek);
    let mut wrapped = vec![0u8; public.ciphertext_size()];
    let wrapped_len = public
        .encrypt(key_to_wrap, &mut wrapped)
        .map_err(|_| ScepError::Crypto("RSA key transport"))?
        .len();
    wrapped.truncate(wrapped_len);
    if tamper.corrupt_encrypted_key
        && let Some(b) = wrapped.get_mut(wrapped_len / 2)
    {
        *b ^= 0x40;
    }

    let (version, rid) = if tamper.recipient_by_key_id {
        let id = recipient
            .subject_key_id
            .as_deref()
            .ok_or(ScepError::InvalidInput(
                "the recipient certificate has no subjectKeyIdentifier",
            ))?;
        (2, der::tlv(der::context_primitive(0), id))
    } else {
        (0, recipient.issuer_and_serial())
    };
    let ktri = der::sequence(&[
        &der::small_integer(version),
        &rid,
        &der::algorithm(&oid::RSA_ENCRYPTION, Some(&der::null())),
        &der::octet_string(&wrapped),
    ]);
    let eci = der::sequence(&[
        &der::oid(&oid::DATA),
        &der::algorithm(&cipher.oid(), Some(&der::octet_string(&iv))),
        &der::tlv(der::context_primitive(0), &ciphertext),
    ]);
    let enveloped = der::sequence(&[&der::small_integer(version), &der::set_of(vec![ktri]), &eci]);
    Ok(signed::content_info(&oid::ENVELOPED_DATA, &enveloped))
}
