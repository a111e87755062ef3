<?php
// An app on PHP's SoapClient (ext/soap), unmodified: it loads the WSDL (and, through it, the schemas
// the WSDL imports) from a URL at run time, then calls the service the WSDL names. Driven line by line
// by tests/integration/gateway/test_soap_clients.py: each stdin line is a JSON command, each stdout line
// the JSON answer. ext/soap reads documents through PHP's http stream wrapper: the one registered here
// refuses any URL outside the base URL it was given and records every URL fetched.
//   php drive.php BASE_URL WSDL_PATH USER PASSWORD
// `certificate_login` is the vendor's certificate flow as a PHP app writes it: authenticateServer, the
// answer checked with openssl_public_decrypt against the server certificate, the server challenge
// encrypted with openssl_private_encrypt (PKCS#1 v1.5), then loginWithCertificate under AuthSessionHeader.

[$base, $wsdlPath, $user, $password] = array_slice($argv, 1);
$GLOBALS['base'] = $base;
$GLOBALS['fetched'] = [];

final class GatewayOnlyHttp
{
    public $context;
    private string $data = '';
    private int $position = 0;

    public function stream_open(string $path, string $mode, int $options, ?string &$opened): bool
    {
        if (!str_starts_with($path, $GLOBALS['base'] . '/')) {
            throw new RuntimeException("refused: $path is not the gateway's");
        }
        $GLOBALS['fetched'][] = 'GET ' . substr($path, strlen($GLOBALS['base']));
        stream_wrapper_restore('http');  // PHP's own http client does the fetch
        try {
            $data = file_get_contents($path, false, stream_context_create(['http' => ['timeout' => 15]]));
        } finally {
            stream_wrapper_unregister('http');
            stream_wrapper_register('http', self::class);
        }
        if ($data === false) {
            return false;
        }
        $this->data = $data;
        return true;
    }

    public function stream_read(int $count): string|false
    {
        $chunk = substr($this->data, $this->position, $count);
        $this->position += strlen($chunk);
        return $chunk;
    }

    public function stream_eof(): bool { return $this->position >= strlen($this->data); }
    public function stream_stat(): array|false { return ['size' => strlen($this->data)]; }
    public function url_stat(string $path, int $flags): array|false { return ['size' => 0]; }
    public function stream_close(): void {}
}

stream_wrapper_unregister('http');
stream_wrapper_register('http', GatewayOnlyHttp::class);
ini_set('default_socket_timeout', '15');

$client = null;
$sessionId = null;

function mergeArgs(string $email): array
{
    return [
        'recordData' => ['fieldNames' => ['EMAIL_ADDRESS_'], 'records' => [['fieldValues' => [$email]]]],
        'mergeRule' => ['insertOnNoMatch' => true, 'updateOnMatch' => 'REPLACE_ALL',
                        'matchColumnName1' => 'EMAIL_ADDRESS_', 'matchOperator' => 'NONE',
                        'defaultPermissionStatus' => 'OPTIN'],
        'campaign' => ['folderName' => 'Campaigns', 'objectName' => 'WELCOME'],
        'triggerData' => [['optionalData' => [['name' => 'ORDER', 'value' => '42']]]],
    ];
}

function signedBytes(string $bytes): array
{
    return array_map(fn ($b) => $b > 127 ? $b - 256 : $b, array_values(unpack('C*', $bytes)));
}

function unsignedBytes(mixed $values): string
{
    return implode('', array_map(fn ($v) => chr(((int) $v) & 0xFF), is_array($values) ? $values : [$values]));
}

while (($line = fgets(STDIN)) !== false) {
    $command = json_decode($line, true);
    try {
        switch ($command['op']) {
            case 'load':
                $client = new SoapClient($base . $wsdlPath, ['cache_wsdl' => WSDL_CACHE_NONE, 'exceptions' => true,
                                                             'connection_timeout' => 15]);
                $operations = array_map(fn ($f) => preg_replace('/^\S+ (\w+)\(.*$/', '$1', $f), $client->__getFunctions());
                sort($operations);
                $answer = ['ok' => true, 'operations' => array_values(array_unique($operations))];
                break;
            case 'login':
                $sessionId = $client->login(['username' => $user, 'password' => $password])->result->sessionId;
                $answer = ['ok' => true, 'session' => $sessionId !== ''];
                break;
            case 'certificate_login':
                $challenge = (string) random_int(0, PHP_INT_MAX);  // as the vendor's samples: a random long's text
                $client->__setSoapHeaders([]);
                $server = $client->authenticateServer(['username' => $command['user'],
                                                       'clientChallenge' => signedBytes($challenge)])->result;
                $proved = openssl_public_decrypt(unsignedBytes($server->encryptedClientChallenge), $decrypted,
                                                 file_get_contents($command['certificate_file']), OPENSSL_PKCS1_PADDING);
                openssl_private_encrypt(unsignedBytes($server->serverChallenge), $encrypted,
                                        file_get_contents($command['key_file']), OPENSSL_PKCS1_PADDING);
                $client->__setSoapHeaders([new SoapHeader('urn:ws.rsys.com', 'AuthSessionHeader',
                                                          ['authSessionId' => $server->authSessionId])]);
                $sessionId = $client->loginWithCertificate(['encryptedServerChallenge' => signedBytes($encrypted)])
                    ->result->sessionId;
                $answer = ['ok' => true, 'server_proved' => $proved && $decrypted === $challenge,
                           'session' => $sessionId !== ''];
                break;
            case 'send':
                $client->__setSoapHeaders([new SoapHeader('urn:ws.rsys.com', 'SessionHeader', ['sessionId' => $sessionId])]);
                $results = $client->mergeTriggerEmail(mergeArgs($command['email']))->result;
                $results = is_array($results) ? $results : [$results];
                $answer = ['ok' => true, 'success' => array_map(fn ($r) => (bool) $r->success, $results)];
                break;
            default:
                $answer = ['ok' => false, 'error' => 'unknown op'];
        }
    } catch (Throwable $error) {
        $answer = ['ok' => false, 'error' => substr($error->getMessage(), 0, 500),
                   'fault' => $error instanceof SoapFault ? ['faultcode' => $error->faultcode] : null];
    }
    $answer['fetched'] = $GLOBALS['fetched'];
    $GLOBALS['fetched'] = [];
    echo json_encode($answer), "\n";
}
