{{- define "aftm-gateway.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aftm-gateway.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "aftm-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aftm-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "aftm-gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "aftm-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "aftm-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aftm-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "aftm-gateway.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "aftm-gateway.publicUrl" -}}
{{- default (printf "http://%s.%s.svc.cluster.local:%d" (include "aftm-gateway.fullname" .) .Release.Namespace (int .Values.service.port)) .Values.publicUrl }}
{{- end }}

{{/*
The environment variables that carry credentials, as a YAML list of {name, key}: the gateway config
names each through <key>_env (or ${VAR}), the Deployment fills each from credentials.existingSecret.
*/}}
{{- define "aftm-gateway.secretEnv" -}}
{{- $c := .Values.credentials }}
{{- $env := list (dict "name" "AFTM_SESSION_SECRET" "key" $c.sessionSecretKey) }}
{{- if $c.adminTokenKey }}
{{- $env = append $env (dict "name" "AFTM_ADMIN_TOKEN" "key" $c.adminTokenKey) }}
{{- end }}
{{- if $c.storePasswordKey }}
{{- /* libpq's variable: the store URL carries no password */}}
{{- $env = append $env (dict "name" "PGPASSWORD" "key" $c.storePasswordKey) }}
{{- end }}
{{- if $c.serverKeyKey }}
{{- /* the gateway's key pair for apps' certificate logins: one Secret, so every replica proves the same key */}}
{{- $env = append $env (dict "name" "AFTM_SERVER_KEY" "key" $c.serverKeyKey) }}
{{- $env = append $env (dict "name" "AFTM_SERVER_CERTIFICATE" "key" $c.serverCertificateKey) }}
{{- end }}
{{- range $i, $account := .Values.accounts }}
{{- if $account.privateKeyKey }}
{{- $env = append $env (dict "name" (printf "AFTM_ACCOUNT_%d_PRIVATE_KEY" $i) "key" $account.privateKeyKey) }}
{{- else }}
{{- $env = append $env (dict "name" (printf "AFTM_ACCOUNT_%d_PASSWORD" $i) "key" $account.passwordKey) }}
{{- end }}
{{- end }}
{{- range $i, $client := .Values.clients }}
{{- if $client.passwordKey }}
{{- $env = append $env (dict "name" (printf "AFTM_CLIENT_%d_PASSWORD" $i) "key" $client.passwordKey) }}
{{- else if $client.passwordHashKey }}
{{- $env = append $env (dict "name" (printf "AFTM_CLIENT_%d_PASSWORD_HASH" $i) "key" $client.passwordHashKey) }}
{{- end }}
{{- if $client.failurePostSecretKey }}
{{- $env = append $env (dict "name" (printf "AFTM_CLIENT_%d_FAILURE_POST_SECRET" $i) "key" $client.failurePostSecretKey) }}
{{- end }}
{{- end }}
{{- range $i, $upstream := .Values.sms.upstreams }}
{{- $env = append $env (dict "name" (printf "AFTM_SMS_%d_PASSWORD" $i) "key" $upstream.passwordKey) }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* The gateway config (gateway.yaml): tuning from .Values.config, the rest owned by the chart. */}}
{{- define "aftm-gateway.config" -}}
{{- $accounts := list }}
{{- range $i, $account := .Values.accounts }}
{{- if $account.privateKeyKey }}
{{- $accounts = append $accounts (set (omit $account "privateKeyKey") "private_key_env" (printf "AFTM_ACCOUNT_%d_PRIVATE_KEY" $i)) }}
{{- else }}
{{- $accounts = append $accounts (set (omit $account "passwordKey") "password_env" (printf "AFTM_ACCOUNT_%d_PASSWORD" $i)) }}
{{- end }}
{{- end }}
{{- $clients := list }}
{{- range $i, $client := .Values.clients }}
{{- $entry := omit $client "passwordKey" "passwordHashKey" "failurePostSecretKey" }}
{{- if $client.failurePostSecretKey }}
{{- $_ := set $entry "failure_post_secret_env" (printf "AFTM_CLIENT_%d_FAILURE_POST_SECRET" $i) }}
{{- end }}
{{- if $client.passwordKey }}
{{- $_ := set $entry "password_env" (printf "AFTM_CLIENT_%d_PASSWORD" $i) }}
{{- else if $client.passwordHashKey }}
{{- /* password_hash is not a Secret field, so it comes in through ${VAR} substitution */}}
{{- $_ := set $entry "password_hash" (printf "${AFTM_CLIENT_%d_PASSWORD_HASH}" $i) }}
{{- end }}
{{- $clients = append $clients $entry }}
{{- end }}
{{- $config := deepCopy .Values.config }}
{{- $l := .Values.listener }}
{{- $_ := set $config "listen" (dict "host" "0.0.0.0" "port" (int .Values.containerPort) "max_header_bytes" (int $l.maxHeaderBytes) "max_headers" (int $l.maxHeaders) "header_timeout" $l.headerTimeout "limit_concurrency" (int $l.limitConcurrency)) }}
{{- $_ := set $config "public_url" (include "aftm-gateway.publicUrl" .) }}
{{- $_ := set $config "store" .Values.store.url }}
{{- $_ := set $config "session_secret_env" "AFTM_SESSION_SECRET" }}
{{- if .Values.credentials.adminTokenKey }}
{{- $_ := set $config "admin" (dict "token_env" "AFTM_ADMIN_TOKEN") }}
{{- end }}
{{- if .Values.credentials.serverKeyKey }}
{{- $_ := set $config "server_key_env" "AFTM_SERVER_KEY" }}
{{- $_ := set $config "server_certificate_env" "AFTM_SERVER_CERTIFICATE" }}
{{- end }}
{{- $_ := set $config "accounts" $accounts }}
{{- $_ := set $config "clients" $clients }}
{{- if .Values.sms.upstreams }}
{{- $upstreams := list }}
{{- range $i, $upstream := .Values.sms.upstreams }}
{{- $upstreams = append $upstreams (set (omit $upstream "passwordKey") "password_env" (printf "AFTM_SMS_%d_PASSWORD" $i)) }}
{{- end }}
{{- $_ := set $config "sms" (dict "upstreams" $upstreams "alternate_senders" (.Values.sms.alternate_senders | default dict)) }}
{{- end }}
{{- toYaml $config }}
{{- end }}
