using Grpc.Core;
using RaySharp.Rpc.Protocol;

namespace RaySharp.Gcs.Services;

internal sealed class JobInfoGcsServiceImpl(GcsJobManager jobs) : JobInfoGcsService.JobInfoGcsServiceBase
{
    public override async Task<GetNextJobIdReply> GetNextJobId(GetNextJobIdRequest request, ServerCallContext context) =>
        new() { JobId = await jobs.NextJobIdAsync().ConfigureAwait(false) };

    public override async Task<AddJobReply> AddJob(AddJobRequest request, ServerCallContext context)
    {
        if (request.JobInfo is null || string.IsNullOrEmpty(request.JobInfo.JobId))
            throw new RpcException(new Status(StatusCode.InvalidArgument, "job_info with a job_id from GetNextJobId is required"));
        await jobs.AddAsync(request.JobInfo).ConfigureAwait(false);
        return new AddJobReply();
    }

    public override async Task<MarkJobFinishedReply> MarkJobFinished(MarkJobFinishedRequest request, ServerCallContext context)
    {
        if (!await jobs.MarkFinishedAsync(request.JobId).ConfigureAwait(false))
            throw new RpcException(new Status(StatusCode.NotFound, $"no job {request.JobId}"));
        return new MarkJobFinishedReply();
    }

    public override async Task<GetAllJobInfoReply> GetAllJobInfo(GetAllJobInfoRequest request, ServerCallContext context)
    {
        var reply = new GetAllJobInfoReply();
        reply.Jobs.Add(await jobs.GetAllAsync().ConfigureAwait(false));
        return reply;
    }
}
