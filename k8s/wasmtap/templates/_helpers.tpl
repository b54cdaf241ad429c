{{/* Labels every object carries; the selector uses the first two. */}}
{{- define "wasmtap.selectorLabels" -}}
app.kubernetes.io/name: wasmtap
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wasmtap.labels" -}}
{{ include "wasmtap.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Where the pod mounts things; the container arguments point there. */}}
{{- define "wasmtap.configDir" -}}/etc/wasmtap/config{{- end }}
{{- define "wasmtap.analyzerDir" -}}/etc/wasmtap/analyzers{{- end }}
{{- define "wasmtap.cacheDir" -}}/var/cache/wasmtap{{- end }}

{{/*
The directory of the runtime's CRI socket, mounted whole (see daemonset.yaml). The schema keeps
the socket out of `/` and free of `.` and `..` components; two mounts on one path would make an
invalid pod.
*/}}
{{- define "wasmtap.criSocketDir" -}}
{{- $dir := dir .Values.cri.socket -}}
{{- if eq $dir (clean .Values.cri.netnsDir) -}}
{{- fail "cri.socket must not be in cri.netnsDir: both would be mounted at one path" -}}
{{- end -}}
{{- $dir -}}
{{- end }}

{{/* Whether user analyzers are mounted, from a ConfigMap or another volume (not both). */}}
{{- define "wasmtap.hasAnalyzers" -}}
{{- if and .Values.analyzers.configMap .Values.analyzers.volume -}}
{{- fail "analyzers: set configMap or volume, not both" -}}
{{- end -}}
{{- if not (or .Values.analyzers.builtin .Values.analyzers.configMap .Values.analyzers.volume) -}}
{{- fail "analyzers.builtin=false needs analyzers.configMap or analyzers.volume: without any analyzer /readyz never passes" -}}
{{- end -}}
{{- if or .Values.analyzers.configMap .Values.analyzers.volume -}}true{{- end -}}
{{- end }}

{{/*
The exporter's configuration file (TOML, every `wasmtap run` flag under its long name). Strings
and lists are written as JSON, which is valid TOML for them (quotes and backslashes escaped).
*/}}
{{- define "wasmtap.config" -}}
# The `wasmtap run --config` file, rendered by the Helm chart from its values.
interface = {{ .Values.interfaces | toJson }}
exclude = {{ .Values.exclude | toJson }}
{{- with .Values.filter }}
filter = {{ . | toJson }}
{{- end }}
listen = {{ printf "0.0.0.0:%d" (int .Values.port) | toJson }}
snaplen = {{ int .Values.snaplen }}
vxlan-port = {{ .Values.vxlanPorts | toJson }}
promisc = {{ .Values.promisc }}
workers = {{ int .Values.workers }}
batch-size = {{ int .Values.batchSize }}
call-budget-ms = {{ int .Values.sandbox.callBudgetMs }}
memory-mib = {{ int .Values.sandbox.memoryMiB }}
series-cap = {{ int .Values.config.seriesCap }}
series-ttl = {{ .Values.config.seriesTtl | toJson }}

[labels.drop]
{{- range $family, $labels := .Values.config.labelsDrop }}
{{ $family | toJson }} = {{ $labels | toJson }}
{{- end }}
{{- end }}
