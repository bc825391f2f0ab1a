{{/*
Name of every object of a release. KubeRay derives longer names (cluster, head service,
submitter job) from the RayJob's, so it is kept to 40 characters.
*/}}
{{- define "aod.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "aod.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "aod.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Where the partition spec, schemas and suites are mounted. */}}
{{- define "aod.specDir" -}}/etc/aod/spec{{- end -}}

{{/*
Schemas (or suites) as a dict: file name -> text. Chart files matched by the glob come
first; a name given in values replaces a chart file of the same name.
Call with (dict "root" $ "glob" <glob> "inline" <map>).
*/}}
{{- define "aod.fileMap" -}}
{{- $out := dict -}}
{{- if .glob -}}
{{- range $path, $_ := .root.Files.Glob .glob -}}
{{- $_ := set $out (base $path) ($.root.Files.Get $path) -}}
{{- end -}}
{{- end -}}
{{- range $name, $doc := .inline -}}
{{- $_ := set $out $name (ternary $doc (toPrettyJson $doc) (kindIs "string" $doc)) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{- define "aod.schemaFiles" -}}
{{- include "aod.fileMap" (dict "root" . "glob" .Values.chartFiles.schemas "inline" .Values.schemas) -}}
{{- end -}}

{{- define "aod.suiteFiles" -}}
{{- include "aod.fileMap" (dict "root" . "glob" .Values.chartFiles.suites "inline" .Values.suites) -}}
{{- end -}}

{{/*
Checks that span several values (the schema checks each value alone). A mistake here would
otherwise surface only after the cluster and its GPUs are up.
*/}}
{{- define "aod.checks" -}}
{{- $w := .Values.worker -}}
{{- if gt (int $w.minReplicas) (int $w.maxReplicas) -}}
{{- fail (printf "worker.minReplicas (%d) must not exceed worker.maxReplicas (%d)" (int $w.minReplicas) (int $w.maxReplicas)) -}}
{{- end -}}
{{- if or (lt (int $w.replicas) (int $w.minReplicas)) (gt (int $w.replicas) (int $w.maxReplicas)) -}}
{{- fail (printf "worker.replicas (%d) must lie between worker.minReplicas (%d) and worker.maxReplicas (%d)" (int $w.replicas) (int $w.minReplicas) (int $w.maxReplicas)) -}}
{{- end -}}
{{- $names := list -}}
{{- range .Values.partitionSpec.partitions -}}
{{- if has .name $names -}}
{{- fail (printf "partitionSpec.partitions: the name %q is used twice" .name) -}}
{{- end -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- $j := .Values.job -}}
{{- if and (not (kindIs "invalid" $j.actors)) (or (not (kindIs "invalid" $j.minActors)) (not (kindIs "invalid" $j.maxActors))) -}}
{{- fail "job.actors sets a fixed pool: leave job.minActors and job.maxActors null, or job.actors null" -}}
{{- end -}}
{{- $pool := include "aod.pool" . | fromJson -}}
{{- if and (hasKey $pool "min") (hasKey $pool "max") (gt (int $pool.min) (int $pool.max)) -}}
{{- fail (printf "the DLM pool's fewest actors (%d) exceed its most (%d): check job.minActors and job.maxActors" (int $pool.min) (int $pool.max)) -}}
{{- end -}}
{{- if and .Values.job.partition (not (has .Values.job.partition $names)) -}}
{{- fail (printf "job.partition %q is not a partition of partitionSpec.partitions (%s)" .Values.job.partition (join ", " $names)) -}}
{{- end -}}
{{- $schemas := include "aod.schemaFiles" . | fromJson -}}
{{- range .Values.partitionSpec.partitions -}}
{{- if hasPrefix "schemas/" .schema -}}
{{- if not (hasKey $schemas (trimPrefix "schemas/" .schema)) -}}
{{- fail (printf "partition %q names schema %q, which is neither in `schemas` nor among the chart files %q (mounted: %s)" .name .schema $.Values.chartFiles.schemas (join ", " (keys $schemas | sortAlpha))) -}}
{{- end -}}
{{- else if not (hasPrefix "/" .schema) -}}
{{- fail (printf "partition %q: schema %q must be schemas/<file> (a schema given to this chart) or an absolute path on the storage volume" .name .schema) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The DLM actor pool as JSON: {"actors": n} for a fixed pool, else {"min": m, "max": n} when
they are set or follow from the GPU worker group (one actor per gpusPerActor GPUs of its
fewest and most pods), and "gpus" (GPUs per actor) when the workers have GPUs or it is set.
*/}}
{{- define "aod.pool" -}}
{{- $j := .Values.job -}}
{{- $w := .Values.worker -}}
{{- $pool := dict -}}
{{- $per := 0.0 -}}
{{- if not (kindIs "invalid" $j.gpusPerActor) -}}
{{- $per = float64 $j.gpusPerActor -}}
{{- $_ := set $pool "gpus" $per -}}
{{- else if gt (int $w.gpus) 0 -}}
{{- $per = 1.0 -}}
{{- $_ := set $pool "gpus" $per -}}
{{- end -}}
{{- if not (kindIs "invalid" $j.actors) -}}
{{- $_ := set $pool "actors" (int64 $j.actors) -}}
{{- else -}}
{{- $most := ternary $w.maxReplicas $w.replicas .Values.autoscaling.enabled -}}
{{- if not (kindIs "invalid" $j.minActors) -}}
{{- $_ := set $pool "min" (int64 $j.minActors) -}}
{{- else if and (gt $per 0.0) (gt (int $w.gpus) 0) -}}
{{- $_ := set $pool "min" (max 1 (int64 (floor (divf (mul $w.minReplicas $w.gpus) $per)))) -}}
{{- end -}}
{{- if not (kindIs "invalid" $j.maxActors) -}}
{{- $_ := set $pool "max" (int64 $j.maxActors) -}}
{{- else if and (gt $per 0.0) (gt (int $w.gpus) 0) -}}
{{- $_ := set $pool "max" (max 1 (int64 (floor (divf (mul $most $w.gpus) $per)))) -}}
{{- end -}}
{{- end -}}
{{- toJson $pool -}}
{{- end -}}

{{/* The job's command: `aod synthesize` for the mounted partition spec. */}}
{{- define "aod.entrypoint" -}}
{{- $j := .Values.job -}}
{{- $pool := include "aod.pool" . | fromJson -}}
{{- $args := list "aod" "synthesize" "--spec" (printf "%s/partitions.yaml" (include "aod.specDir" .)) "--out" $j.output -}}
{{- with $j.partition }}{{ $args = concat $args (list "--partition" .) }}{{ end -}}
{{- if not (kindIs "invalid" $j.rows) }}{{ $args = concat $args (list "--rows" (toString (int64 $j.rows))) }}{{ end -}}
{{- if hasKey $pool "actors" }}{{ $args = concat $args (list "--actors" (toString (int64 $pool.actors))) }}{{ end -}}
{{- if hasKey $pool "min" }}{{ $args = concat $args (list "--min-actors" (toString (int64 $pool.min))) }}{{ end -}}
{{- if hasKey $pool "max" }}{{ $args = concat $args (list "--max-actors" (toString (int64 $pool.max))) }}{{ end -}}
{{- if hasKey $pool "gpus" }}{{ $args = concat $args (list "--gpus-per-actor" (toString $pool.gpus)) }}{{ end -}}
{{- if not (kindIs "invalid" $j.gpuWaitSeconds) }}{{ $args = concat $args (list "--gpu-wait" (toString (int64 $j.gpuWaitSeconds))) }}{{ end -}}
{{- with $j.promptDir }}{{ $args = concat $args (list "--prompt-dir" .) }}{{ end -}}
{{- join " " $args -}}
{{- end -}}

{{/* The spec volume: the spec, schemas and suites ConfigMaps projected into one folder. */}}
{{- define "aod.specVolume" -}}
- name: aod-spec
  projected:
    sources:
      - configMap:
          name: {{ include "aod.fullname" . }}-spec
          items:
            - {key: partitions.yaml, path: partitions.yaml}
      {{- $schemas := include "aod.schemaFiles" . | fromJson }}
      {{- if $schemas }}
      - configMap:
          name: {{ include "aod.fullname" . }}-schemas
          items:
            {{- range $name := keys $schemas | sortAlpha }}
            - {key: {{ $name | quote }}, path: {{ printf "schemas/%s" $name | quote }}}
            {{- end }}
      {{- end }}
      {{- $suites := include "aod.suiteFiles" . | fromJson }}
      {{- if $suites }}
      - configMap:
          name: {{ include "aod.fullname" . }}-suites
          items:
            {{- range $name := keys $suites | sortAlpha }}
            - {key: {{ $name | quote }}, path: {{ printf "suites/%s" $name | quote }}}
            {{- end }}
      {{- end }}
{{- with .Values.storage }}
{{- if eq .type "pvc" }}
- name: aod-data
  persistentVolumeClaim:
    claimName: {{ include "aod.fullname" $ }}-data
{{- else if eq .type "existingClaim" }}
- name: aod-data
  persistentVolumeClaim:
    claimName: {{ .existingClaim }}
{{- else if eq .type "hostPath" }}
- name: aod-data
  hostPath:
    path: {{ .hostPath.path }}
    type: {{ .hostPath.type | default "DirectoryOrCreate" }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "aod.volumeMounts" -}}
- name: aod-spec
  mountPath: {{ include "aod.specDir" . }}
  readOnly: true
{{- if ne .Values.storage.type "none" }}
- name: aod-data
  mountPath: {{ .Values.storage.mountPath }}
{{- end }}
{{- end -}}

{{/* AOD_AGENT_KEY from the user's Secret, by reference only. */}}
{{- define "aod.env" -}}
{{- with .Values.agentKeySecret }}
{{- if .name }}
- name: AOD_AGENT_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod template of a Ray node. Call with (dict "root" $ "node" <head|worker values> "container" <name> "gpus" <n>). */}}
{{- define "aod.podTemplate" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "aod.labels" $root | nindent 4 }}
spec:
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  containers:
    - name: {{ .container }}
      image: {{ include "aod.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      {{- if eq .container "ray-head" }}
      ports:
        - {containerPort: 6379, name: gcs-server}
        - {containerPort: 8265, name: dashboard}
        - {containerPort: 10001, name: client}
      {{- end }}
      {{- $env := include "aod.env" $root }}
      {{- if $env }}
      env:
        {{- $env | nindent 8 }}
      {{- end }}
      resources:
        {{- $res := deepCopy (.node.resources | default dict) }}
        {{- if .gpus }}
        {{- $_ := set $res "limits" (merge (dict "nvidia.com/gpu" (int .gpus)) ($res.limits | default dict)) }}
        {{- end }}
        {{- toYaml $res | nindent 8 }}
      volumeMounts:
        {{- include "aod.volumeMounts" $root | nindent 8 }}
  volumes:
    {{- include "aod.specVolume" $root | nindent 4 }}
  {{- with .node.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .node.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
