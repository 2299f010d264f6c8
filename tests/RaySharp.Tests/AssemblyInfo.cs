// The process tests start clusters of real processes on a 2-core machine; running them one at a time keeps their
// timings honest and their failures readable.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

// The tests drive Linux processes, namespaces and file modes.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
