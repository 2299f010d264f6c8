namespace RaySharp.CoreWorker.Submission;

/// <summary>Where actor calls of this process go, and for which job: a driver's for its job, a worker's per job it runs.</summary>
internal sealed record ActorCallerContext(string JobId, string Namespace, ActorTaskSubmitter Submitter, Func<Task<string>> LocalRaylet)
{
    /// <summary>The namespace of a job that names none: its own alone, so two drivers share named actors only when both give one.</summary>
    public static string AnonymousNamespace(string jobId) => "job-" + jobId;
}
