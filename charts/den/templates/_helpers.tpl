{{- define "den.operatorName" -}}{{ printf "%s-den-operator" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "den.serviceAccount" -}}{{ default (include "den.operatorName" .) .Values.serviceAccount.name }}{{- end -}}
{{- define "den.watched" -}}{{ default (list .Release.Namespace) .Values.operator.watchNamespaces | toJson }}{{- end -}}
{{- define "den.labels" -}}
app.kubernetes.io/name: den
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "den.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}
{{- define "den.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}
{{- define "den.rules" -}}
- apiGroups: ["den.dev"]
  resources: ["agents"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["den.dev"]
  resources: ["agents/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "secrets", "persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods", "pods/log"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
