// Ed25519 key pairs made in the browser with Web Crypto, written in OpenSSH's formats.
// The private key never leaves the browser: it is only offered as a file download.

function u32(n) { return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]; }
function sshString(bytes) { return [...u32(bytes.length), ...bytes]; }
const utf8 = (s) => new TextEncoder().encode(s);
function b64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Whether this browser can make Ed25519 keys (Web Crypto's Ed25519). */
export async function canGenerate() {
  try {
    await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    return true;
  } catch {
    return false;
  }
}

/** A new key pair: { publicKey: "ssh-ed25519 AAAA... comment", privateKey: OpenSSH PEM text }. */
export async function generateEd25519(comment) {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
  const pub = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const seed = pkcs8.slice(pkcs8.length - 32); // PKCS#8 for Ed25519 ends with the 32-byte seed
  const type = utf8("ssh-ed25519");
  const blob = new Uint8Array([...sshString(type), ...sshString(pub)]);

  // openssh-key-v1, unencrypted ("none" cipher, block size 8).
  const check = crypto.getRandomValues(new Uint8Array(4));
  const priv = [...check, ...check, ...sshString(type), ...sshString(pub), ...sshString([...seed, ...pub]), ...sshString(utf8(comment))];
  for (let pad = 1; priv.length % 8 !== 0; pad++) priv.push(pad);
  const body = new Uint8Array([
    ...utf8("openssh-key-v1"), 0,
    ...sshString(utf8("none")), ...sshString(utf8("none")), ...sshString([]),
    ...u32(1), ...sshString(blob), ...sshString(priv),
  ]);
  seed.fill(0);
  const lines = b64(body).match(/.{1,70}/g).join("\n");
  return {
    publicKey: `ssh-ed25519 ${b64(blob)} ${comment}`,
    privateKey: `-----BEGIN OPENSSH PRIVATE KEY-----\n${lines}\n-----END OPENSSH PRIVATE KEY-----\n`,
  };
}

/** Offer text as a file download (the browser writes it; nothing is uploaded). */
export function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "application/octet-stream" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
