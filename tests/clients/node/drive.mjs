// An app on the npm `soap` package, unmodified: it loads the WSDL (and, through it, the schemas the WSDL
// imports) from a URL at run time, then calls the service the WSDL names. Driven line by line by
// tests/integration/gateway/test_soap_clients.py: each stdin line is a JSON command, each stdout line
// the JSON answer. Its HTTP goes through an axios instance (the package's own `request` option) that
// refuses any URL outside the base URL it was given and records every URL fetched.
//   node drive.mjs BASE_URL WSDL_PATH USER PASSWORD
// `certificate_login` is the vendor's certificate flow as a Node app writes it: authenticateServer, the
// answer checked with crypto.publicDecrypt against the server certificate, the server challenge encrypted
// with crypto.privateEncrypt (PKCS#1 v1.5), then loginWithCertificate under AuthSessionHeader.
import crypto from 'node:crypto';
import fs from 'node:fs';
import readline from 'node:readline';
import axios from 'axios';
import soap from 'soap';

const [base, wsdlPath, user, password] = process.argv.slice(2);
const fetched = [];
const request = axios.create({ proxy: false, timeout: 15000 });
request.interceptors.request.use((config) => {
  const url = new URL(config.url, base).href;
  if (!url.startsWith(base + '/')) throw new Error(`refused: ${url} is not the gateway's`);
  fetched.push(`${(config.method || 'get').toUpperCase()} ${url.slice(base.length)}`);
  return config;
});

let client = null;
let sessionId = null;

function mergeArgs(email) {
  return {
    recordData: { fieldNames: ['EMAIL_ADDRESS_'], records: [{ fieldValues: [email] }] },
    mergeRule: { insertOnNoMatch: true, updateOnMatch: 'REPLACE_ALL', matchColumnName1: 'EMAIL_ADDRESS_',
                 matchOperator: 'NONE', defaultPermissionStatus: 'OPTIN' },
    campaign: { folderName: 'Campaigns', objectName: 'WELCOME' },
    triggerData: [{ optionalData: [{ name: 'ORDER', value: '42' }] }],
  };
}

const signedBytes = (buffer) => [...buffer].map((b) => (b > 127 ? b - 256 : b));
const unsignedBytes = (values) => Buffer.from([].concat(values).map((v) => Number(v) & 0xff));

const commands = {
  async load() {
    client = await soap.createClientAsync(base + wsdlPath, { request, disableCache: true });
    return { operations: Object.keys(client.describe().ResponsysWSService.ResponsysWS).sort() };
  },
  async login() {
    const [answer] = await client.loginAsync({ username: user, password });
    sessionId = answer.result.sessionId;
    return { session: Boolean(sessionId) };
  },
  async certificate_login({ user: name, key_file: keyFile, certificate_file: certificateFile }) {
    const challenge = Buffer.from(String(crypto.randomInt(2 ** 47)));  // as the vendor's samples: a random long
    client.clearSoapHeaders();
    const [{ result: server }] = await client.authenticateServerAsync({ username: name,
                                                                        clientChallenge: signedBytes(challenge) });
    const decrypted = crypto.publicDecrypt({ key: fs.readFileSync(certificateFile),
                                             padding: crypto.constants.RSA_PKCS1_PADDING },
                                           unsignedBytes(server.encryptedClientChallenge));
    const encrypted = crypto.privateEncrypt({ key: fs.readFileSync(keyFile), padding: crypto.constants.RSA_PKCS1_PADDING },
                                            unsignedBytes(server.serverChallenge));
    client.addSoapHeader(`<ws:AuthSessionHeader xmlns:ws="urn:ws.rsys.com"><ws:authSessionId>${server.authSessionId}</ws:authSessionId></ws:AuthSessionHeader>`);
    const [answer] = await client.loginWithCertificateAsync({ encryptedServerChallenge: signedBytes(encrypted) });
    sessionId = answer.result.sessionId;
    return { server_proved: decrypted.equals(challenge), session: Boolean(sessionId) };
  },
  async send({ email }) {
    client.clearSoapHeaders();
    client.addSoapHeader(`<ws:SessionHeader xmlns:ws="urn:ws.rsys.com"><ws:sessionId>${sessionId}</ws:sessionId></ws:SessionHeader>`);
    const [answer] = await client.mergeTriggerEmailAsync(mergeArgs(email));
    const results = [].concat(answer.result);
    return { success: results.map((r) => r.success === true || r.success === 'true') };
  },
};

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const command = JSON.parse(line);
  let answer;
  try {
    answer = { ok: true, ...(await commands[command.op](command)) };
  } catch (error) {
    const fault = error.root?.Envelope?.Body?.Fault;
    answer = { ok: false, error: String(error.message).slice(0, 500), fault: fault ?? null };
  }
  process.stdout.write(JSON.stringify({ ...answer, fetched: fetched.splice(0) }) + '\n');
}
