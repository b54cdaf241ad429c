{{- define "wasmtap.labels" -}}
app.kubernetes.io/name: wasmtap
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
