{{/* Names, labels and the pieces every Tern pod shares. */}}

{{- define "tern.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name: the release name, unless it lacks the chart's. */}}
{{- define "tern.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The services, in the order they are rendered. */}}
{{- define "tern.workers" -}}
{{- list "failover" "reprotect" "cleanup" | toJson }}
{{- end }}

{{- define "tern.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tern.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of every object; `component` names the service (or "bootstrap"). */}}
{{- define "tern.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tern.selectorLabels" . }}
app.kubernetes.io/part-of: tern
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* Labels of objects that belong to the release as a whole. */}}
{{- define "tern.releaseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "tern.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: tern
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tern.image" -}}
{{- $image := .Values.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret a secret setting names: its secretName, else <fullname>-<suffix>. */}}
{{- define "tern.secretName" -}}
{{- default (printf "%s-%s" (include "tern.fullname" .root) .suffix) .ref.secretName }}
{{- end }}

{{/* Where a component's files are mounted. */}}
{{- define "tern.paths.natsCredentials" -}}/var/run/secrets/tern/nats{{- end }}
{{- define "tern.paths.natsCA" -}}/var/run/secrets/tern/nats-ca{{- end }}
{{- define "tern.paths.apiTokens" -}}/var/run/secrets/tern/api-tokens{{- end }}
{{- define "tern.paths.apiTLS" -}}/var/run/secrets/tern/api-tls{{- end }}
{{- define "tern.paths.apiClientCA" -}}/var/run/secrets/tern/api-client-ca{{- end }}

{{/* Secrets are readable by the pod's group (fsGroup 65532) only. */}}
{{- define "tern.secretMode" -}}288{{- end }}

{{/* Pod-level hardening: the image's non-root user, its group owns the mounted secrets. */}}
{{- define "tern.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "tern.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/*
The NATS and Azure variables every service takes. Arguments: root, component, identity (the
NATS identity's name).
*/}}
{{- define "tern.commonEnv" -}}
{{- $v := .root.Values }}
- name: TERN_NATS_URL
  value: {{ $v.nats.url | quote }}
{{- if $v.nats.credentials.enabled }}
- name: TERN_NATS_CREDENTIALS
  value: {{ printf "%s/%s.nk" (include "tern.paths.natsCredentials" .) .identity | quote }}
{{- end }}
{{- if $v.nats.ca.enabled }}
- name: TERN_NATS_CA_FILE
  value: {{ printf "%s/ca.crt" (include "tern.paths.natsCA" .) | quote }}
{{- end }}
- name: TERN_ENSURE_TOPOLOGY
  value: "false"
- name: TERN_REPLICAS
  value: {{ $v.nats.replicas | quote }}
- name: TERN_ASR__ENDPOINT
  value: {{ $v.azure.endpoint | quote }}
- name: TERN_ASR__SUBSCRIPTION_ID
  value: {{ $v.azure.subscriptionId | quote }}
- name: TERN_ASR__RESOURCE_GROUP
  value: {{ $v.azure.resourceGroup | quote }}
- name: TERN_ASR__VAULT
  value: {{ $v.azure.vault | quote }}
{{- with $v.azure.cacheStorageAccounts }}
- name: TERN_ASR__CACHE_STORAGE_ACCOUNTS
  value: {{ toJson . | quote }}
{{- end }}
{{- with $v.budget }}
- name: TERN_BUDGET
  value: {{ toJson . | quote }}
{{- end }}
- name: TERN_JSON_EVENTS
  value: {{ $v.jsonEvents | quote }}
- name: TERN_LOG
  value: {{ $v.logLevel | quote }}
- name: TERN_LOG_FORMAT
  value: json
{{- with $v.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- range $name, $value := $v.extraEnv }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- range $name, $value := (index $v .component).env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Volume mounts every service has: a scratch /tmp and its NATS credentials and CA. */}}
{{- define "tern.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .root.Values.nats.credentials.enabled }}
- name: nats-credentials
  mountPath: {{ include "tern.paths.natsCredentials" . }}
  readOnly: true
{{- end }}
{{- if .root.Values.nats.ca.enabled }}
- name: nats-ca
  mountPath: {{ include "tern.paths.natsCA" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
The volumes behind tern.commonVolumeMounts. Arguments: root, identity; credentialsSecret and
caSecret override the Secrets they come from (the bootstrap Job's hook Secret).
*/}}
{{- define "tern.commonVolumes" -}}
{{- $v := .root.Values }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if $v.nats.credentials.enabled }}
{{- $ref := index $v.nats.credentials .identity }}
- name: nats-credentials
  secret:
    secretName: {{ default (include "tern.secretName" (dict "root" .root "ref" $ref "suffix" (printf "nats-%s" .identity))) .credentialsSecret }}
    defaultMode: {{ include "tern.secretMode" . }}
    items:
      - key: {{ $ref.key }}
        path: {{ printf "%s.nk" .identity }}
{{- end }}
{{- if $v.nats.ca.enabled }}
- name: nats-ca
  secret:
    secretName: {{ default (include "tern.secretName" (dict "root" .root "ref" $v.nats.ca "suffix" "nats-ca")) .caSecret }}
    defaultMode: {{ include "tern.secretMode" . }}
    items:
      - key: {{ $v.nats.ca.key }}
        path: ca.crt
{{- end }}
{{- end }}

{{/* Scheduling shared by every component. Arguments: root, component. */}}
{{- define "tern.scheduling" -}}
{{- $v := .root.Values }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.topologySpreadKeys }}
topologySpreadConstraints:
{{- range $v.topologySpreadKeys }}
  - topologyKey: {{ . }}
    maxSkew: 1
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "tern.selectorLabels" (dict "root" $.root "component" $.component) | nindent 8 }}
{{- end }}
{{- end }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod labels: selector labels, workload identity's opt-in, the user's. */}}
{{- define "tern.podLabels" -}}
{{ include "tern.labels" . }}
{{- if .root.Values.azure.workloadIdentity.enabled }}
azure.workload.identity/use: "true"
{{- end }}
{{- with .root.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The checksum of the Secrets the chart creates, so pods restart when one changes. */}}
{{- define "tern.secretsChecksum" -}}
{{ include (print .Template.BasePath "/secrets.yaml") . | sha256sum }}
{{- end }}

{{/* listenAddress:port, bracketed for IPv6. Arguments: root, port. */}}
{{- define "tern.listen" -}}
{{- $host := .root.Values.listenAddress }}
{{- if contains ":" $host }}
{{- printf "[%s]:%v" $host .port }}
{{- else }}
{{- printf "%s:%v" $host .port }}
{{- end }}
{{- end }}

{{/* Egress every Tern pod needs: cluster DNS and the NATS servers. */}}
{{- define "tern.egress.base" -}}
{{- $np := .Values.networkPolicy }}
- to:
    {{- toYaml $np.dns.to | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
- to:
    {{- toYaml $np.nats.to | nindent 4 }}
  ports:
    - port: {{ $np.nats.port }}
      protocol: TCP
{{- end }}
